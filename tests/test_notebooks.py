"""The tutorial notebooks: committed without outputs, and executed top to bottom.

Every notebook runs in a fresh kernel (nbclient) with ``DSPARK_VIZ_NB_PRESET=ci`` — tiny
in-process targets, a tiny drafter trained once by the toolchain (``$DSPARK_VIZ_TUTORIAL_DIR``,
a per-session temp dir, so CI always exercises the training path), small sample counts. The
notebooks carry their own assertions (losslessness, Appendix A); here we also check that no
cell errored, that figures and the step-through widget were produced, and (slow) that notebook
1 runs on the embedded Gemma 3 270M, its default preset.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
from nbclient.exceptions import CellTimeoutError, DeadKernelError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("0*.ipynb"))
PLOTLY = "application/vnd.plotly.v1+json"
WIDGET = "application/vnd.jupyter.widget-view+json"
TIMES: dict[str, float] = {}
SLOWEST: dict[str, tuple[int, float]] = {}  # notebook → (code cell index, seconds)


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_six_numbered_notebooks():
    assert [p.name[:3] for p in NOTEBOOKS] == [f"0{i}_" for i in range(1, 7)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_committed_without_outputs_and_with_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    stale = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
             and (c.outputs or c.execution_count is not None)]
    assert not stale, f"{path.name}: cells {stale} carry outputs (strip them before committing)"
    assert "widgets" not in nb.metadata, f"{path.name}: saved widget state in the metadata"
    first = _code_cells(nb)[0]
    assert "parameters" in first.metadata.get("tags", []), "first code cell must be the parameters cell"
    assert "DSPARK_VIZ_NB_PRESET" in first.source and "PRESET" in first.source
    src = "\n".join(c.source for c in _code_cells(nb))
    assert "dspark_viz" in src


def _execute(path: Path, tmp: Path, env: dict[str, str], timeout: int = 240,
             preset_overrides: str = ""):
    """Run the notebook once; on a cell that never answers, once more in a fresh kernel.

    Now and then a kernel goes idle with the client still waiting for a cell's reply (both sides
    in their event loops, no code running: a lost message; seen with ipykernel 7.x and, rarely,
    6.31). The per-cell limit (240 s, several times the slowest CI cell) turns that into a
    timeout, and one retry in a fresh kernel tells it apart from a cell that is really too slow
    (that one times out twice and fails).
    """
    try:
        return _execute_once(path, tmp, env, timeout, preset_overrides)
    except (CellTimeoutError, DeadKernelError) as e:
        print(f"{path.name}: {type(e).__name__} ({str(e).splitlines()[0][:120]}); retrying once")
        return _execute_once(path, tmp, env, timeout, preset_overrides)


def _execute_once(path: Path, tmp: Path, env: dict[str, str], timeout: int,
                  preset_overrides: str):
    nb = nbformat.read(path, as_version=4)
    if preset_overrides:  # papermill-style injection right after the cell that builds P
        i = next(i for i, c in enumerate(nb.cells) if "W.get_preset(PRESET)" in c.source)
        nb.cells.insert(i + 1, nbformat.v4.new_code_cell(
            f"P = W.get_preset(PRESET, {preset_overrides})  # injected by the test"))
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    try:
        client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                         resources={"metadata": {"path": str(tmp)}},
                                         record_timing=True)
        t0 = time.perf_counter()
        client.execute()
        TIMES[path.name] = time.perf_counter() - t0
        SLOWEST[path.name] = _slowest_cell(nb)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def _slowest_cell(nb) -> tuple[int, float]:
    """(code cell index, seconds from execute_input to execute_reply) of the slowest cell."""
    from datetime import datetime
    best = (-1, 0.0)
    for i, c in enumerate(_code_cells(nb)):
        ex = c.metadata.get("execution", {})
        a, b = ex.get("iopub.execute_input"), ex.get("shell.execute_reply")
        if a and b:
            dt = (datetime.fromisoformat(b.replace("Z", "+00:00"))
                  - datetime.fromisoformat(a.replace("Z", "+00:00"))).total_seconds()
            best = max(best, (i, dt), key=lambda x: x[1])
    return best


def _outputs(nb):
    return [o for c in _code_cells(nb) for o in c.get("outputs", [])]


@pytest.fixture(scope="session")
def tutorial_dir(tmp_path_factory):
    """Per session (shared with test_notebook_browser.py): the tiny drafters are trained once."""
    d = tmp_path_factory.getbasetemp() / "nb-tutorial-drafters"
    d.mkdir(exist_ok=True)
    return d


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_notebook_executes_on_ci_preset(path, tmp_path, tutorial_dir):
    env = {"DSPARK_VIZ_NB_PRESET": "ci", "DSPARK_VIZ_TUTORIAL_DIR": str(tutorial_dir),
           "DSPARK_VIZ_NB_WORKDIR": str(tmp_path / "work"), "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    nb = _execute(path, tmp_path, env)
    outs = _outputs(nb)
    errors = [o for o in outs if o.output_type == "error"]
    assert not errors, f"{path.name}: {errors[0].ename}: {errors[0].evalue}"
    n_fig = sum(PLOTLY in o.get("data", {}) for o in outs)
    n_widget = sum(WIDGET in o.get("data", {}) for o in outs)
    assert n_fig >= 1, f"{path.name}: no plotly figure among the cell outputs"
    assert n_widget >= 1, f"{path.name}: no widget displayed"
    for o in outs:  # every displayed figure is valid JSON with data or an explanation
        if PLOTLY in o.get("data", {}):
            fig = o["data"][PLOTLY]
            assert fig.get("data") or fig.get("layout", {}).get("annotations"), path.name
    text = "".join(o.get("text", "") for o in outs if o.output_type == "stream")
    if path.name.startswith("01"):
        assert "identical=True" in text and "identical=False" not in text
    if path.name.startswith("05"):
        assert "retrospective search gives ≈ 0.85" in text
    if path.name.startswith("06"):
        assert "trained dspark drafter" in text and "trained dflash drafter" in text
        assert (tmp_path / "work" / "dspark" / "drafter" / "calibration.json").exists()
        assert "calibration loaded with the drafter: True" in text
    print(f"{path.name}: {TIMES[path.name]:.1f} s, {n_fig} figures, {n_widget} widgets")


def test_notebook_time_budget():
    """All six on the CI preset within the issue's 15 minutes (≈ 85 s on an idle 2-core machine;
    the bound leaves room for a busy one)."""
    if len(TIMES) < len(NOTEBOOKS):
        pytest.skip("runs after the execution tests (not all of them ran)")
    total = sum(TIMES.values())
    print(json.dumps({k: round(v, 1) for k, v in TIMES.items()} | {"total": round(total, 1)}))
    slow = {k: f"cell {i}: {dt:.0f} s" for k, (i, dt) in SLOWEST.items()}
    assert total < 900, f"notebooks took {total:.0f} s on the CI preset; slowest cells {slow}"


@pytest.mark.slow
def test_notebook_1_on_the_embedded_model(tmp_path, tutorial_dir):
    """The default preset: the live losslessness check on the embedded Gemma 3 270M
    (shorter answers and fewer Monte-Carlo draws than a person gets, to fit the CI budget)."""
    path = NOTEBOOKS[0]
    nb = _execute(path, tmp_path, {"DSPARK_VIZ_NB_PRESET": "embedded",
                                   "DSPARK_VIZ_TUTORIAL_DIR": str(tutorial_dir),
                                   "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"},
                  preset_overrides="max_new_tokens=16, mc_samples=2000")
    outs = _outputs(nb)
    errors = [o for o in outs if o.output_type == "error"]
    assert not errors, f"{errors[0].ename}: {errors[0].evalue}"
    text = "".join(o.get("text", "") for o in outs if o.output_type == "stream")
    assert "embedded:gemma3-270m" in text
    assert text.count("identical=True") == 3


# ----------------------------------------------------------------------------- the helpers
def test_presets_and_rejection_pieces(monkeypatch):
    import numpy as np
    from dspark_viz.config import ConfigError
    from dspark_viz.viz import widgets as W
    monkeypatch.setenv("DSPARK_VIZ_NB_PRESET", "ci")
    assert W.get_preset().name == "ci" and W.get_preset().is_tiny
    assert W.get_preset("embedded").target == "embedded"
    with pytest.raises(ConfigError, match="unknown notebook preset"):
        W.get_preset("nope")
    pc = W.rejection_pieces([0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(pc["output"], pc["p_t"], atol=1e-12)  # lossless, exactly
    assert pc["p_accept"] == pytest.approx(0.1 + 0.2 + 0.15 + 0.05)
    np.testing.assert_allclose(pc["residual"], [0.8, 0.2, 0.0, 0.0])
    same = W.rejection_pieces([0.2, 0.8], [0.2, 0.8])  # zero residual: falls back to p_t
    assert same["p_accept"] == pytest.approx(1.0) and same["residual"].tolist() == [0.2, 0.8]


def test_round_stepper_walks_real_rounds(tiny_qwen):
    pytest.importorskip("ipywidgets")
    from conftest import make_drafter
    from dspark_viz.config import DecodeConfig
    from dspark_viz.decoding.engine import SpecSession
    from dspark_viz.viz import widgets as W
    d = make_drafter(tiny_qwen)
    s = W.live_session(tiny_qwen, d, "hello", gamma=4, temperature=1.0, max_new_tokens=16, seed=5)
    st = W.RoundStepper({"dspark": s}, panels=W.PANELS, prefetch=2)
    assert st.explorer.total_rounds == 2 and st.cursor == 0 and st.slider.max == 2
    assert st.step() == 1 and st.step() == 1 and st.step() == 1  # the third one is computed
    assert st.cursor == 3 and st.explorer.total_rounds == 3 and st.play.max == 3
    assert len(st.figures()) == 6 and "dsv-tokens" in st.text_html()
    st.back()
    assert st.cursor == 2 and st.slider.value == 2 and st.explorer.total_rounds == 3
    while st.step():
        pass
    solo = SpecSession(tiny_qwen, d, DecodeConfig(gamma=4, temperature=1.0, max_new_tokens=16,
                                                  seed=5)).run("hello")
    assert st.lanes[0].trace.output_ids() == solo.output_ids()  # stepping = one plain run


def test_appendix_a_and_collision_through_verify_block():
    import torch
    from dspark_viz.decoding import scheduler as S
    from dspark_viz.viz import widgets as W
    g = torch.Generator().manual_seed(1)
    cap = W.appendix_a_capacity()
    n = 4000
    alg1 = W.appendix_a_trials(S.HardwareAware(cap, record_path=False), n, g)
    retro = W.appendix_a_trials(S.Retrospective(cap, record_path=False), n, g)
    assert abs(alg1["p_first"][0] - 0.7) < 5 * (0.21 / n) ** 0.5 and alg1["ell"][0] == 1.0
    assert abs(retro["p_first"][0] - 0.85) < 5 * (0.1275 / n) ** 0.5
    assert retro["ell_by_x1"][0][2] == 1.0 and retro["ell_by_x1"][1][0] == 1.0
    c = W.collision_experiment(3000, g)
    assert c["markov"]["tau"] == 3.0 and c["markov"]["p_accept_2"] == 1.0
    assert abs(c["parallel"]["tau"] - 2.5) < 0.06 and abs(c["parallel"]["joint"][0, 1] - 0.25) < 0.04
