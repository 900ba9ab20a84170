"""The tutorial notebooks: committed without outputs, and executed top to bottom.

Every notebook runs in a fresh kernel (nbclient) with ``DSPARK_VIZ_NB_PRESET=ci`` — tiny
in-process targets, a tiny drafter trained once by the toolchain (``$DSPARK_VIZ_TUTORIAL_DIR``,
a per-session temp dir, so CI always exercises the training path), small sample counts. The
notebooks carry their own assertions (losslessness, Appendix A); here we also check that no
cell errored, that figures and the step-through widget were produced, that no cell went over
its time budget (``CELL_BUDGET_S``) and no shipped file changed, and (slow) that notebook 1
runs on the embedded Gemma 3 270M, its default preset. ``DSPARK_VIZ_NB_DEFAULT=1`` runs all six
on the default preset against their budgets (about 15 min on 2 cores).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import queue
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
# Budgets in seconds (issue 20). The slowest cell of each notebook, by preset: "ci" is checked on
# every run; "embedded" (the default preset people get) by the opt-in run below, which also
# holds each whole notebook to NOTEBOOK_BUDGET_S — on a 2-core CPU with one thread, what the
# first cell of each notebook promises.
CELL_BUDGET_S = {
    "ci": {"01": 120, "02": 60, "03": 60, "04": 60, "05": 60, "06": 90},  # 01 trains the tiny drafters
    "embedded": {"01": 90, "02": 180, "03": 200, "04": 120, "05": 90, "06": 120},
}
NOTEBOOK_BUDGET_S = 300
ASSETS = ROOT / "dspark_viz" / "assets"


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
    # a LaTeX backslash written unescaped becomes a control character (\t of \text, \a of
    # \approx): the formula then renders as "ext", "pprox"
    ctrl = [(i, repr(ch)) for i, c in enumerate(nb.cells) for ch in c.source if ord(ch) < 32 and ch != "\n"]
    assert not ctrl, f"{path.name}: control characters in cells {ctrl}"


class _NudgingClient(nbclient.NotebookClient):
    """A NotebookClient that waits for kernel messages in slices of ``NUDGE_S`` seconds and sends
    a ``kernel_info`` request every ``NUDGE_S`` seconds while a cell runs.

    On the default preset, after a cell that displays widgets, the next cell now and then
    starts late with kernel and client both idle (ipykernel 6.31, pyzmq 27: 297 s, twice in two
    runs of notebook 3 with a 300 s per-cell limit, and once more with the nudge alone; each
    stall ended a few seconds before the client's own deadline, i.e. when the client's one long
    wait on the socket ran out). Fresh short waits and a little traffic end such a stall within
    seconds; JupyterLab's own traffic does the same, so people do not see it. The extra
    replies carry another parent id, which nbclient ignores.
    """

    NUDGE_S = 5.0

    async def _nudge(self):
        while True:
            await asyncio.sleep(self.NUDGE_S)
            self.kc.kernel_info()

    def _slice_waits(self) -> None:
        for ch in (self.kc.shell_channel, self.kc.iopub_channel):
            if getattr(ch, "_dsv_sliced", False):
                continue
            ch._dsv_sliced, whole = True, ch.get_msg

            async def get_msg(timeout=None, _whole=whole):
                deadline = None if timeout is None else time.monotonic() + timeout
                while True:
                    left = self.NUDGE_S if deadline is None else deadline - time.monotonic()
                    try:
                        return await _whole(timeout=max(0.0, min(self.NUDGE_S, left)))
                    except queue.Empty:
                        if deadline is not None and time.monotonic() >= deadline:
                            raise
            ch.get_msg = get_msg

    async def async_execute_cell(self, *args, **kwargs):
        self._slice_waits()
        task = asyncio.ensure_future(self._nudge())
        try:
            return await super().async_execute_cell(*args, **kwargs)
        finally:
            task.cancel()


def _execute(path: Path, tmp: Path, env: dict[str, str], timeout: int = 240,
             preset_overrides: str = ""):
    """Run the notebook once; on a cell that never answers, once more in a fresh kernel.

    Now and then a kernel goes idle with the client still waiting for a cell's reply (both sides
    in their event loops, no code running: a lost message; seen with ipykernel 7.x and 6.31).
    ``_NudgingClient`` wakes such a kernel within seconds; should one still sit, the per-cell
    limit (240 s, several times the slowest CI cell) turns it into a timeout, and one retry in a
    fresh kernel tells it apart from a cell that is really too slow (that one times out twice
    and fails).
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
        client = _NudgingClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp)}}, record_timing=True)
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
    """(code cell index, seconds) of the slowest cell, timed from the previous cell's reply to
    its own: a cell the kernel starts late (a lost request) counts its wait too."""
    from datetime import datetime

    def t(s):
        return datetime.fromisoformat(s.replace("Z", "+00:00"))
    best, prev = (-1, 0.0), None
    for i, c in enumerate(_code_cells(nb)):
        ex = c.metadata.get("execution", {})
        a, b = ex.get("iopub.execute_input"), ex.get("shell.execute_reply")
        if a and b:
            dt = (t(b) - (prev if prev is not None else t(a))).total_seconds()
            best = max(best, (i, dt), key=lambda x: x[1])
            prev = t(b)
    return best


def _outputs(nb):
    return [o for c in _code_cells(nb) for o in c.get("outputs", [])]


def _assets_digest() -> dict[str, str]:
    """sha256 of every file of the shipped drafters — weights, config, calibration: what a
    notebook could overwrite (``save_calibration``, ``save_pretrained``) and must never."""
    return {str(p.relative_to(ASSETS)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((ASSETS / "drafters").rglob("*")) if p.is_file() and p.suffix != ".md"}


def _check_budget(path: Path, preset: str) -> None:
    i, dt = SLOWEST[path.name]
    budget = CELL_BUDGET_S[preset][path.name[:2]]
    assert dt <= budget, (f"{path.name} on the {preset} preset: code cell {i} took {dt:.0f} s, "
                          f"over its {budget} s budget")


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
    shipped = _assets_digest()
    nb = _execute(path, tmp_path, env)
    assert _assets_digest() == shipped, f"{path.name} changed a shipped file"
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
    print(f"{path.name}: {TIMES[path.name]:.1f} s, {n_fig} figures, {n_widget} widgets, "
          f"slowest code cell {SLOWEST[path.name][0]}: {SLOWEST[path.name][1]:.1f} s")
    _check_budget(path, "ci")


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


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("DSPARK_VIZ_NB_DEFAULT") != "1",
                    reason="the six notebooks on the default preset take about 6–7 min on 2 cores: "
                           "set DSPARK_VIZ_NB_DEFAULT=1 (and DSPARK_VIZ_NB_SAVE=DIR to keep them)")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_notebook_on_the_default_preset_within_budget(path, tmp_path, tutorial_dir):
    """What a person runs: the default ``embedded`` preset, unchanged, one thread; no cell over
    its budget, the whole notebook within ``NOTEBOOK_BUDGET_S``, no shipped file touched."""
    env = {"DSPARK_VIZ_NB_PRESET": "embedded", "DSPARK_VIZ_TUTORIAL_DIR": str(tutorial_dir),
           "DSPARK_VIZ_NB_WORKDIR": str(tmp_path / "work"), "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    shipped = _assets_digest()
    nb = _execute(path, tmp_path, env, timeout=NOTEBOOK_BUDGET_S)
    if os.environ.get("DSPARK_VIZ_NB_SAVE"):  # keep the executed notebook, to read its outputs
        out = Path(os.environ["DSPARK_VIZ_NB_SAVE"])
        out.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out / path.name)
    assert _assets_digest() == shipped, f"{path.name} changed a shipped file"
    errors = [o for o in _outputs(nb) if o.output_type == "error"]
    assert not errors, f"{path.name}: {errors[0].ename}: {errors[0].evalue}"
    i, dt = SLOWEST[path.name]
    print(json.dumps({"notebook": path.name, "wall_s": round(TIMES[path.name], 1),
                      "slowest_code_cell": i, "slowest_s": round(dt, 1)}))
    _check_budget(path, "embedded")
    assert TIMES[path.name] <= NOTEBOOK_BUDGET_S, \
        f"{path.name}: {TIMES[path.name]:.0f} s on the default preset, over {NOTEBOOK_BUDGET_S} s"


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


def test_admission_stepper_zooms_and_prints_delta_theta():
    pytest.importorskip("ipywidgets")
    import numpy as np
    from dspark_viz.decoding import scheduler as S
    from dspark_viz.decoding.policy import RequestView
    from dspark_viz.load.capacity import get_curve
    from dspark_viz.viz import widgets as W
    rng = np.random.default_rng(0)
    views = [RequestView(np.sort(rng.uniform(0.2, 0.9, 7))[::-1].copy(), 7) for _ in range(64)]
    st = W.AdmissionStepper(views, get_curve("h200-qwen3-8b"))
    assert st.path.n == 448 and st.n_show >= st.stop + 1 and st.slider.value == st.stop
    assert st.play.step == -(-st.n_show // 40)  # Play crosses the path in about 40 frames
    lo, hi = st.shown_range(st.stop)
    assert hi - lo + 1 == st.window == 40 and lo <= st.stop <= hi
    fig = st.figure(st.stop).to_dict()
    xr = fig["layout"]["xaxis"]["range"]
    assert xr[0] < st.path.B[lo - 1] <= st.path.B[hi - 1] < xr[1]  # zoomed to the window
    assert "candidates" in fig["layout"]["annotations"][0]["text"]
    i = st.stop + 1  # the first refused one: ΔΘ printed, not two equal rounded Θ
    msg = st.message(i)
    delta = st.path.theta[i - 1] - st.path.theta[i - 2]
    assert f"ΔΘ = {delta:+.3g}" in msg and "no improvement" in msg and delta <= 0
    assert "ΔΘ" in st.message(1) and "Θ₀" in st.message(0)
    small = W.AdmissionStepper(views[:2], get_curve("h200-qwen3-8b"))
    assert small.shown_range(3) == (0, small.n_show)  # a short path is shown whole
    assert S.early_stop_count(small.path) == small.stop


def test_cliff_capacity_makes_the_early_stop_decide():
    import numpy as np
    from dspark_viz.decoding import scheduler as S
    from dspark_viz.decoding.policy import RequestView
    from dspark_viz.viz import widgets as W
    cap = W.cliff_capacity()
    assert cap.sps(1) == 1.0 and cap.sps(2) == pytest.approx(0.75) and cap.sps(3) == pytest.approx(0.7425)
    low = [RequestView(np.array([0.3, 0.8, 0.8, 0.8, 0.0, 0.0, 0.0]), 7)]  # a₁ = 0.3 < 1/3
    assert S.HardwareAware(cap).decide(low)[0].ell == 0  # x₁ alone does not pay: stop
    assert S.Retrospective(cap).decide(low)[0].ell == 4  # the look-ahead verifies it anyway
    high = [RequestView(np.array([0.5, 0.8, 0.8, 0.8, 0.0, 0.0, 0.0]), 7)]
    assert S.HardwareAware(cap).decide(high)[0].ell == S.Retrospective(cap).decide(high)[0].ell == 4


def test_first_differing_round(tiny_qwen):
    from conftest import make_drafter
    from dspark_viz.config import DecodeConfig
    from dspark_viz.decoding.engine import SpecSession
    from dspark_viz.load.policy_spec import policy_from_spec
    from dspark_viz.viz import widgets as W
    d = make_drafter(tiny_qwen)
    cfg = DecodeConfig(max_new_tokens=20)
    a = SpecSession(tiny_qwen, d, cfg, policy=policy_from_spec("fixed:7", 7)).run("ab")
    b = SpecSession(tiny_qwen, d, cfg, policy=policy_from_spec("fixed:7", 7)).run("ab")
    assert W.first_differing_round([a, b]) == 0  # identical lanes: the start
    c = SpecSession(tiny_qwen, d, cfg, policy=policy_from_spec("fixed:2", 7)).run("ab")
    assert W.first_differing_round([a, c]) == 0 and len(a.rounds[0].verify) != len(c.rounds[0].verify)
    assert W.first_differing_round([a, a], start=2) == 2


def test_teacher_forced_scores_every_answer_position(tiny_qwen):
    from conftest import make_drafter
    from dspark_viz.config import DecodeConfig
    from dspark_viz.decoding.engine import SpecSession
    from dspark_viz.viz import widgets as W
    d = make_drafter(tiny_qwen)
    answers = [SpecSession(tiny_qwen, None, DecodeConfig(max_new_tokens=n, mode="ar")).run(p)
               for p, n in (("ab", 12), ("hello", 9))]
    res = W.teacher_forced(tiny_qwen, {"dspark": d}, answers)["dspark"]
    assert res["blocks"] == sum(len(t.output_ids()) - 1 for t in answers)  # every anchor
    assert len(res["greedy"]) == len(res["accept"]) == d.cfg.block_size
    assert all(0.0 <= g <= 1.0 for g in res["greedy"] + res["accept"])
    assert 1.0 <= res["tau_greedy"] <= 1 + d.cfg.block_size
    fig = W.teacher_forced_figure({"dspark": res}).to_dict()
    assert fig["data"][0]["y"] == pytest.approx(res["greedy"])
