"""Benchmark of the explorer app: first interactive page, step latency, replay rate.

    python bench/bench_app.py [--target embedded] [--rounds 30] [--browser]

Measures, in one run on this machine:
- models load time and app build time (Blocks construction) and, with --browser, the time
  from navigation to the Start button being visible in headless Chromium (first interactive page);
- per-round step latency through the real HTTP API (gradio_client → queue → handler → panels):
  p50 / p95 over ``--rounds`` rounds on the embedded default target with γ = 7, greedy,
  fixed(γ) policy, plus the model part alone (round total_ms recorded in the trace);
- replay: rounds per second when playing a recorded trace (server-side render of all panels
  per round, and the effective playback rate of the play ticks at speed 120 rounds/s).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dspark_viz.decoding.trace import Trace  # noqa: E402
from dspark_viz.drafter.registry import resolve_drafter  # noqa: E402
from dspark_viz.targets import load_target  # noqa: E402
from dspark_viz.viz.app_state import Explorer, Lane  # noqa: E402


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="embedded")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--browser", action="store_true")
    a = ap.parse_args()
    import torch
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    import app as appmod  # gradio: heavy, so imported here
    from gradio_client import Client, handle_file
    t0 = time.perf_counter()
    target = load_target(a.target)
    drafter, label = resolve_drafter("default", target)
    t_models = time.perf_counter() - t0
    t0 = time.perf_counter()
    demo = appmod.build_app(target, drafter, drafter_label=label)
    _, url, _ = appmod.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    t_build = time.perf_counter() - t0
    print(f"models: {t_models:.1f} s ({target.name} + {label}); build+launch: {t_build:.2f} s")
    if a.browser:
        from playwright.sync_api import sync_playwright
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            page = b.new_page()
            t0 = time.perf_counter()
            page.goto(url, wait_until="load")
            page.locator("#dsv-start").wait_for()
            print(f"first interactive page (navigate → Start visible): {time.perf_counter() - t0:.2f} s")
            b.close()
    c = Client(url, verbose=False)
    args = ["live model", "def fibonacci(n):\n    ", target.name, "default", None, 7, 0.0, 0,
            min(256, a.rounds * 8 + 8), "fixed", 1, appmod.NO_CURVE, True, False, "off", False, False]
    t0 = time.perf_counter()
    c.predict(*args, api_name="/start")
    print(f"start (prefill + panels): {time.perf_counter() - t0:.2f} s")
    lat = []
    for _ in range(a.rounds):
        t0 = time.perf_counter()
        c.predict(False, api_name="/step")
        lat.append(time.perf_counter() - t0)
    files = c.predict(api_name="/export_trace")
    tr = Trace.load(files[0])
    model_ms = [r.timings.total_ms for r in tr.rounds]
    print(f"step latency over {len(lat)} rounds (HTTP API, all panels): p50 {statistics.median(lat) * 1e3:.0f} ms, "
          f"p95 {pct(lat, 0.95) * 1e3:.0f} ms; model part (round total_ms): p50 "
          f"{statistics.median(model_ms):.0f} ms, p95 {pct(model_ms, 0.95):.0f} ms; "
          f"mean τ {tr.summary.tau_mean:.2f} (τ = accepted + 1)")
    print("  model part p50 breakdown: draft "
          f"{statistics.median([r.timings.draft_ms for r in tr.rounds]):.0f} ms, Markov "
          f"{statistics.median([r.timings.markov_ms for r in tr.rounds]):.0f} ms, verify "
          f"{statistics.median([r.timings.verify_ms for r in tr.rounds]):.0f} ms; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    # replay: server-side render rate and play-tick rate
    ex = Explorer([Lane("replay", "r", tr)], source="replay")
    n = len(tr.rounds)
    t0 = time.perf_counter()
    reps = 0
    while time.perf_counter() - t0 < 3.0:
        ex.seek(0)
        for _ in range(n):
            ex.forward(1)
            vals = appmod.render(ex)
            for v in vals:
                if hasattr(v, "to_json"):
                    v.to_json()
            reps += 1
    dt = time.perf_counter() - t0
    print(f"replay render (state step + every panel built and serialised), {reps} rounds: "
          f"{reps / dt:.0f} rounds/s")
    with tempfile.TemporaryDirectory() as d:
        p = tr.save(Path(d) / "t.json")
        args_r = list(args)
        args_r[0], args_r[4] = "replay a trace file", handle_file(str(p))
        c.predict(*args_r, api_name="/start")
        c.predict(api_name="/play")
        t0 = time.perf_counter()
        ticks = 0
        while True:
            out = c.predict(120, False, api_name="/tick")
            ticks += 1
            if f"round {n}/{n}" in out[0]:
                break
        dt = time.perf_counter() - t0
    print(f"replay playback via /tick at speed 120: {n} rounds in {ticks} ticks, {dt:.2f} s of "
          f"handler time ({n / dt:.0f} rounds/s; the page's timer adds {appmod.TICK_S} s per tick, "
          f"i.e. 120 rounds/s at that speed)")
    demo.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
