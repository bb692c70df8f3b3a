"""The report's figures: estimates over weeks, one forest plot per change, loop health.

matplotlib figures on the Agg canvas (no pyplot state, so safe in any thread). This module
imports matplotlib at its top: only `page.write_report` imports it, when a report is drawn.
Tables and text live in `tables.py`.
"""

import io

import numpy as np
import polars as pl
from matplotlib import image as mpl_image
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from feedback_pipeline.impact.drift import PSI_LARGE
from feedback_pipeline.impact.proxy_gaming import PROXY_SHAPE_METRICS
from feedback_pipeline.impact.weekly_report.cells import ALPHA, ESTIMATE_METHODS, fmt, is_rate, metric_label

PNG_DPI = 100
SHAPE_METRICS = ("response_chars", *PROXY_SHAPE_METRICS)


def png(fig: Figure) -> bytes:
    """The bytes `fig.savefig(format="png", dpi=100)` writes, from one draw instead of two.

    savefig draws once only to run the constrained layout, then again to render; a plain
    draw runs the layout first and renders in the same pass (a test checks the bytes match).
    """
    fig.set_dpi(PNG_DPI)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    buf = io.BytesIO()
    mpl_image.imsave(buf, canvas.buffer_rgba(), format="png", origin="upper", dpi=PNG_DPI,
                     metadata={"Software": None})
    return buf.getvalue()


def fixed_margins(fig: Figure, rows: int, left: float = 0.75, bottom: float = 0.55) -> None:
    """Margins in inches for a grid of week panels, instead of the constrained layout (half
    of such a figure's drawing time): their labels have known sizes (fixed week ticks)."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=left / width, right=1 - 0.15 / width, top=1 - 0.3 / height,
                        bottom=bottom / height, hspace=(0.3 + bottom) / (height / rows - 0.3 - bottom),
                        wspace=0.2)


def week_ticks(ax, weeks: np.ndarray) -> None:
    """One tick per week, labelled month-day: fixed ticks, not matplotlib's date locator,
    which re-runs on every layout pass and was a third of a figure's drawing time."""
    ticks = np.unique(weeks.astype("datetime64[D]"))
    ax.set_xticks(ticks.astype(float), [str(t)[5:] for t in ticks])


def placeholder(text: str) -> Figure:
    fig = Figure(figsize=(8, 1.5))
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, color="#666")
    return fig


def estimates_figure(est: pl.DataFrame) -> Figure:
    """Per agent: the failure rate by week under each ESTIMATE_METHODS method, 95 % CIs."""
    rows = est.filter((pl.col("metric") == "failure_rate") & pl.col("method").is_in(list(ESTIMATE_METHODS)))
    if rows.is_empty():
        return placeholder("No failure-rate estimates up to this week.")
    agents = sorted(rows["agent_id"].unique().to_list())
    fig = Figure(figsize=(9, 2.8 * len(agents)))
    fixed_margins(fig, len(agents))
    for i, agent in enumerate(agents):
        ax = fig.add_subplot(len(agents), 1, i + 1)
        for j, (method, (label, color)) in enumerate(ESTIMATE_METHODS.items()):
            part = rows.filter((pl.col("agent_id") == agent) & (pl.col("method") == method)).sort("week")
            part = part.filter(pl.col("estimate").is_not_null())
            if part.is_empty():
                continue
            x = part["week"].cast(pl.Date).to_numpy().astype("datetime64[D]") + np.timedelta64(j - 1, "D")
            y = part["estimate"].to_numpy()
            err = np.vstack([y - part["ci_low"].fill_null(np.nan).to_numpy(),
                             part["ci_high"].fill_null(np.nan).to_numpy() - y])
            style = {"ls": "--", "marker": "s"} if method == "naive_thumbs" else {"ls": "-", "marker": "o"}
            ax.errorbar(x, 100 * y, yerr=100 * np.nan_to_num(err), color=color, capsize=3, label=label, **style)
        ax.set_title(f"{agent}: failure rate, 95 % CI", loc="left", fontsize=10)
        ax.set_ylabel("% of turns")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if ax.has_data():  # an agent whose estimates are all empty gets an empty panel, no legend
            ax.legend(fontsize=8, loc="upper left")
        week_ticks(ax, rows.filter(pl.col("agent_id") == agent)["week"].cast(pl.Date).to_numpy())
    return fig


def forest_figure(change_id: str, rows: pl.DataFrame, flagged: bool, reason: str | None) -> Figure:
    """One change's effects with CIs: rates in percentage points, other metrics in % of before."""
    shown = rows.filter(pl.col("effect").is_not_null()).to_dicts()
    rates = [r for r in shown if is_rate(r["metric"])]
    other = [r for r in shown if not is_rate(r["metric"]) and r.get("mean_before")]
    if not rates and not other:
        return placeholder(f"{change_id}: no metric had enough data for an effect.")
    panels = [(p, s) for p, s in ((rates, 100.0), (other, None)) if p]
    fig = Figure(figsize=(10, 1.2 + 0.32 * max(len(p) for p, _ in panels) * 1.0), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (part, scale) in zip(axes, panels):
        y = np.arange(len(part))[::-1]
        for yi, r in zip(y, part):
            k = scale if scale else 100.0 / r["mean_before"]
            lo, hi = (r["effect"] if r[c] is None else r[c] for c in ("ci_low", "ci_high"))
            gaming = flagged and r["metric"] in SHAPE_METRICS
            color = "tab:red" if gaming else "tab:blue"
            significant = r["p_adjusted"] is not None and r["p_adjusted"] < ALPHA
            ax.plot([k * lo, k * hi], [yi, yi], color=color, lw=2)
            ax.plot([k * r["effect"]], [yi], "o", color=color, mfc=color if significant else "white", ms=7)
            ax.annotate(f"p_adj={fmt(r['p_adjusted'], 'p')}", (1.0, yi), xycoords=("axes fraction", "data"),
                        xytext=(4, 0), textcoords="offset points", va="center", fontsize=8,
                        color=color)
        ax.axvline(0, color="#555", lw=1)
        ax.set_yticks(y, [metric_label(r) for r in part], fontsize=8)
        ax.set_ylim(-0.7, len(part) - 0.3)
        ax.set_xlabel("after − before, percentage points" if scale else "after − before, % of before")
        ax.grid(axis="x", alpha=0.3)
    title = f"{change_id}   (filled: BH-adjusted p < {ALPHA})"
    if flagged:
        title += f"\nPROXY GAMING: {reason or 'flagged'}"
    fig.suptitle(title, fontsize=10, color="tab:red" if flagged else "black")
    return fig


def loop_figure(loop: pl.DataFrame) -> Figure:
    """Per agent: held-out pass rate, eval set and label throughput, input drift; flags as red crosses."""
    if loop.is_empty():
        return placeholder("No loop-health rows up to this week.")
    agents = sorted(loop["agent_id"].unique().to_list())
    fig = Figure(figsize=(12, 2.8 * len(agents)))
    axes = fig.subplots(len(agents), 3, squeeze=False)
    fixed_margins(fig, len(agents), left=0.5, bottom=0.6)
    for row, agent in zip(axes, agents):
        d = loop.filter(pl.col("agent_id") == agent).sort("week")
        x = d["week"].cast(pl.Date).to_numpy().astype("datetime64[D]")

        def col(name: str) -> np.ndarray:
            return d[name].cast(pl.Float64).fill_null(np.nan).to_numpy()

        def flag(ax, name: str, values: np.ndarray) -> None:
            hit = d[name].fill_null(False).to_numpy()
            if hit.any():
                ax.plot(x[hit], np.nan_to_num(values[hit]), "X", color="tab:red", ms=10, label=name)

        ax = row[0]
        ax.fill_between(x, col("pass_rate_ci_low"), col("pass_rate_ci_high"), alpha=0.2, color="tab:blue")
        ax.plot(x, col("pass_rate"), "o-", color="tab:blue", label="held-out pass rate (95 % CI)")
        ax.plot(x, col("judge_kappa"), ":", color="tab:purple", label="judge–human κ")
        flag(ax, "pass_rate_stalled", col("pass_rate"))
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{agent}: held-out pass rate", loc="left", fontsize=10)
        ax = row[1]
        ax.plot(x, col("eval_set_size"), "o-", color="tab:green", label="eval-set cases")
        ax.bar(x, col("labels_imported"), width=3, color="#bbb", label="labels imported")
        flag(ax, "eval_set_stalled", col("eval_set_size"))
        ax.set_ylim(0, 1.45 * max(np.nanmax(np.append(col("eval_set_size"), 0)),
                                  np.nanmax(np.append(col("labels_imported"), 0)), 1))  # room for the legend
        ax.set_title("eval set and label throughput", loc="left", fontsize=10)
        ax = row[2]
        ax.plot(x, col("intent_psi"), "o-", label="intent PSI")
        ax.plot(x, col("channel_psi"), "s-", label="channel PSI")
        ax.plot(x, col("share_rated"), ":", color="#777", label="share rated")
        ax.axhline(PSI_LARGE, color="tab:red", ls="--", lw=1)
        flag(ax, "input_drift", np.fmax(col("intent_psi"), col("channel_psi")))
        ax.set_title("input drift vs previous week", loc="left", fontsize=10)
        # "best" searches every placement on each draw: only where the data's place varies.
        for ax, where in zip(row, ("best", "upper left", "upper left")):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc=where)
            week_ticks(ax, x)
            ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    return fig
