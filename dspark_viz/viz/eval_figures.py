"""Evaluation and calibration figures: report dicts → plotly figures (pure).

Scope: the figures of ``dspark-viz eval`` and ``dspark-viz calibrate`` — τ by dataset and
drafter, position-wise conditional acceptance (the paper's Figure 2 shape), wall-clock
speedup over plain decoding, the static-threshold sweep (accepted/rejected draft tokens per
step as stacked bars, acceptance rate as a line; Figure 5), and reliability diagrams of the
prefix survival a_k before/after STS with the histogram of counts behind them (Figure 6).
Inputs are the JSON-ready dicts of ``eval.benchmark.run_eval`` and
``eval.calibration.calibration_report``; every figure carries the metric's definition in its
subtitle. No I/O (saving PNG/HTML is in ``eval.commands``), no models.
"""
from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

PALETTE = ("#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#c62828", "#00897b", "#5d4037")
ACCEPTED, REJECTED, RATE = "#2e7d32", "#e57373", "#212121"
RAW, CAL = "#ef6c00", "#1565c0"


def _color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _title(main: str, definition: str) -> dict:
    return {"text": f"{main}<br><sup>{definition}</sup>", "x": 0.01, "xanchor": "left"}


def _results(report: dict, temperature: float | None, speculative_only: bool = False) -> list[dict]:
    rows = [r for r in report["results"]
            if (temperature is None or r["temperature"] == temperature)
            and not (speculative_only and r["mode"] == "ar")]
    return rows


def _datasets(report: dict) -> list[str]:
    return list(report["datasets"])


def tau_figure(report: dict, temperature: float) -> go.Figure:
    """Grouped bars: τ per dataset (and macro) for every drafter at one temperature."""
    xs = _datasets(report) + ["macro"]
    fig = go.Figure()
    for i, r in enumerate(_results(report, temperature)):
        ys = [r["datasets"][d]["tau"] for d in xs[:-1]] + [r["macro"]["tau"]]
        fig.add_bar(x=xs, y=ys, name=r["drafter"], marker_color=_color(i),
                    text=[f"{y:.2f}" if y is not None else "" for y in ys], textposition="outside",
                    hovertemplate=f"{r['drafter']}<br>%{{x}}: τ = %{{y:.3f}}<extra></extra>")
    fig.update_layout(barmode="group", title=_title(
        f"Accepted length τ by dataset — {report['target']}, γ={report['settings']['gamma']}, "
        f"T={temperature:g}", report["definitions"]["tau"][:110] + "…"),
        yaxis_title="τ (accepted drafts + 1 target token)", template="plotly_white",
        height=460, legend_title="drafter", margin={"t": 90})
    return fig


def conditional_acceptance_figure(report: dict, temperature: float,
                                  key: str = "conditional_acceptance") -> go.Figure:
    """One panel per dataset (plus macro): the per-position curve of every drafter."""
    names = _datasets(report) + ["macro"]
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, shared_yaxes=True,
                        horizontal_spacing=0.03)
    for i, r in enumerate(_results(report, temperature, speculative_only=True)):
        for j, ds in enumerate(names):
            m = r["macro"] if ds == "macro" else r["datasets"][ds]
            ys = m.get(key) or []
            fig.add_scatter(x=list(range(1, len(ys) + 1)), y=ys, mode="lines+markers",
                            name=r["drafter"], legendgroup=r["drafter"], showlegend=j == 0,
                            line={"color": _color(i)}, row=1, col=j + 1,
                            hovertemplate=f"{r['drafter']} · {ds}<br>k=%{{x}}: %{{y:.3f}}<extra></extra>")
    label = "conditional acceptance" if key == "conditional_acceptance" else "cumulative survival"
    fig.update_xaxes(title_text="draft position k", dtick=1)
    fig.update_yaxes(title_text=label, row=1, col=1)
    fig.update_layout(title=_title(f"Position-wise {label} — T={temperature:g}",
                                   report["definitions"][key]),
                      template="plotly_white", height=420, margin={"t": 110})
    return fig


def speedup_figure(report: dict) -> go.Figure:
    """Bars of wall-clock speedup over plain decoding, one panel per temperature."""
    temps = list(dict.fromkeys(r["temperature"] for r in report["results"]))
    fig = make_subplots(rows=1, cols=len(temps), subplot_titles=[f"T={t:g}" for t in temps],
                        shared_yaxes=True)
    xs = _datasets(report) + ["macro"]
    for j, T in enumerate(temps):
        for i, r in enumerate(_results(report, T, speculative_only=True)):
            ys = [r["datasets"][d]["speedup"] for d in xs[:-1]] + [r["macro"]["speedup"]]
            fig.add_bar(x=xs, y=ys, name=r["drafter"], legendgroup=r["drafter"],
                        showlegend=j == 0, marker_color=_color(i), row=1, col=j + 1,
                        text=[f"{y:.2f}×" if y is not None else "" for y in ys],
                        textposition="outside",
                        hovertemplate=f"{r['drafter']}<br>%{{x}}: %{{y:.3f}}×<extra></extra>")
    fig.add_hline(y=1.0, line_dash="dot", line_color="#616161")
    fig.update_layout(barmode="group", title=_title(
        f"Wall-clock speedup over plain decoding — {report['target']} on {report['device']}",
        report["definitions"]["speedup"]), yaxis_title="speedup (×)", template="plotly_white",
        height=440, margin={"t": 100})
    return fig


def sweep_figure(sweep: dict) -> go.Figure:
    """Figure 5 for one (temperature, drafter) entry of ``report["sweep"]``: a panel per domain."""
    names = [d for d, rows in sweep["datasets"].items() if rows]
    fig = make_subplots(rows=1, cols=max(1, len(names)), subplot_titles=names,
                        specs=[[{"secondary_y": True}] * max(1, len(names))])
    for j, ds in enumerate(names):
        rows = sweep["datasets"][ds]
        xs = [r["threshold"] for r in rows]
        first = j == 0
        fig.add_bar(x=xs, y=[r["accepted_per_step"] for r in rows], name="accepted tokens",
                    marker_color=ACCEPTED, legendgroup="a", showlegend=first, row=1, col=j + 1,
                    secondary_y=False)
        fig.add_bar(x=xs, y=[r["rejected_per_step"] for r in rows], name="rejected tokens",
                    marker_color=REJECTED, marker_pattern_shape="/", legendgroup="r",
                    showlegend=first, row=1, col=j + 1, secondary_y=False)
        rate = [r["acceptance_rate"] for r in rows]
        fig.add_scatter(x=xs, y=rate, mode="lines+markers+text", name="acceptance rate",
                        line={"color": RATE}, legendgroup="rate", showlegend=first,
                        text=[f"{v:.0%}" if v is not None and i in (0, len(rows) - 1) else ""
                              for i, v in enumerate(rate)], textposition="top center",
                        row=1, col=j + 1, secondary_y=True)
        fig.update_yaxes(range=[0, 1.05], dtick=0.2, tickformat=".0%", row=1, col=j + 1,
                         secondary_y=True,
                         showgrid=False, title_text="acceptance rate" if j == len(names) - 1 else None)
    fig.update_xaxes(title_text="confidence threshold on c_k")
    fig.update_yaxes(title_text="avg. draft tokens per step", row=1, col=1, secondary_y=False)
    fig.update_layout(barmode="stack", template="plotly_white", height=420, margin={"t": 110},
                      title=_title(f"Static threshold sweep — {sweep['drafter']}, "
                                   f"T={sweep['temperature']:g}",
                                   "bars: accepted / rejected draft tokens per verification step; "
                                   "line: acceptance rate; offline replay of rounds recorded at "
                                   "fixed ℓ = γ" + ("" if sweep.get("exact", True)
                                                    else " (recorded under another policy)")))
    return fig


def reliability_figure(cal: dict, positions: list[int] | None = None,
                       title: str = "Reliability of prefix survival a_k") -> go.Figure:
    """Figure 6: per position, observed vs predicted a_k before/after STS, counts behind."""
    ks = positions or [r["k"] for r in cal["before"] if r["n"]]
    ks = ks or [1]
    fig = make_subplots(rows=1, cols=len(ks), shared_yaxes=True, horizontal_spacing=0.03,
                        specs=[[{"secondary_y": True}] * len(ks)],
                        subplot_titles=[_pos_title(cal, k) for k in ks])
    # one count scale for every panel: only the last panel labels the count axis
    top = max([x["count"] for k in ks for rep in (cal["before"][k - 1], cal["after"][k - 1])
               for x in rep["bins"]] + [1])
    for j, k in enumerate(ks):
        col, first = j + 1, j == 0
        b, a = cal["before"][k - 1], cal["after"][k - 1]
        centers = [(x["lo"] + x["hi"]) / 2 for x in a["bins"]]
        width = a["bins"][0]["hi"] - a["bins"][0]["lo"] if a["bins"] else 0.1
        fig.add_bar(x=centers, y=[x["count"] for x in a["bins"]], width=width, name="count (after)",
                    marker_color="rgba(21,101,192,0.13)", legendgroup="n", showlegend=first,
                    row=1, col=col, secondary_y=True, hovertemplate="%{y} rounds<extra></extra>")
        fig.add_bar(x=centers, y=[x["count"] for x in b["bins"]], width=width, name="count (before)",
                    marker_color="rgba(239,108,0,0.13)", legendgroup="nb", showlegend=first,
                    row=1, col=col, secondary_y=True, hovertemplate="%{y} rounds<extra></extra>")
        fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "#9e9e9e"},
                        name="perfect calibration", legendgroup="p", showlegend=first,
                        row=1, col=col, secondary_y=False)
        for rep, name, color in ((b, "before calibration", RAW), (a, "after calibration", CAL)):
            pts = [x for x in rep["bins"] if x["count"]]
            fig.add_scatter(x=[x["mean_pred"] for x in pts], y=[x["observed"] for x in pts],
                            mode="lines+markers", name=name, legendgroup=name, showlegend=first,
                            line={"color": color}, row=1, col=col, secondary_y=False,
                            customdata=[x["count"] for x in pts],
                            hovertemplate="predicted %{x:.3f}<br>observed %{y:.3f}<br>"
                                          "n = %{customdata}<extra>" + name + "</extra>")
        fig.update_yaxes(range=[0, 1], row=1, col=col, secondary_y=False)
        fig.update_yaxes(showgrid=False, showticklabels=j == len(ks) - 1, row=1, col=col,
                         range=[0, top * 1.1], tickmode="auto", nticks=6,
                         secondary_y=True, title_text="count" if j == len(ks) - 1 else None)
        fig.update_xaxes(range=[0, 1], row=1, col=col, title_text="predicted a_k")
    fig.update_yaxes(title_text="observed prefix survival", row=1, col=1, secondary_y=False)
    fig.update_annotations(font_size=12)
    fig.update_layout(barmode="overlay", template="plotly_white", height=480, margin={"t": 150},
                      title=_title(title, "equal-width bins; ECE before → after, ROC-AUC of a_k "
                                          "(raw, after) per panel"))
    return fig


def _pos_title(cal: dict, k: int) -> str:
    b, a = cal["before"][k - 1], cal["after"][k - 1]

    def pct(x):
        return "–" if x is None else f"{x:.1%}"

    def auc(x):
        return "–" if x is None else f"{x:.3f}"

    return (f"k={k} · n={b['n']}<br>ECE {pct(b['ece'])} → {pct(a['ece'])}<br>"
            f"AUC {auc(b['auroc'])} / {auc(a['auroc'])}")


def calibration_summary_figure(cal: dict) -> go.Figure:
    """ECE and mean predicted vs observed per position, before and after."""
    ks = [r["k"] for r in cal["before"]]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("ECE of a_k", "mean predicted vs observed"))
    for rep, name, color in ((cal["before"], "before", RAW), (cal["after"], "after", CAL)):
        fig.add_scatter(x=ks, y=[r["ece"] for r in rep], mode="lines+markers", name=f"ECE {name}",
                        line={"color": color}, row=1, col=1)
        fig.add_scatter(x=ks, y=[r["mean_pred"] for r in rep], mode="lines+markers",
                        name=f"mean predicted {name}", line={"color": color, "dash": "dash"},
                        row=1, col=2)
    fig.add_scatter(x=ks, y=[r["observed"] for r in cal["before"]], mode="lines+markers",
                    name="observed", line={"color": RATE}, row=1, col=2)
    if all(r.get("ece_floor") is not None for r in cal["after"]):
        fig.add_scatter(x=ks, y=[r["ece_floor"] for r in cal["after"]], mode="lines",
                        name="ECE floor (sampling noise at this n)",
                        line={"color": "#888", "dash": "dot"}, row=1, col=1)
    fig.update_yaxes(tickformat=".1%", rangemode="tozero", row=1, col=1)
    fig.update_xaxes(title_text="draft position k", dtick=1)
    fig.update_layout(template="plotly_white", height=380, title=_title(
        "STS per position", "temperatures " + ", ".join(f"{t:.2f}" for t in cal["temperatures"])))
    return fig


__all__ = ["tau_figure", "conditional_acceptance_figure", "speedup_figure", "sweep_figure",
           "reliability_figure", "calibration_summary_figure"]
