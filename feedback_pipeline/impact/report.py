"""The weekly impact report: one self-contained HTML file plus the PNGs it embeds.

Pure rendering over Polars frames (no Dagster, no warehouse): matplotlib figures on the
Agg canvas (no pyplot state, so safe in any thread), HTML tables, nothing fetched from
outside. The asset loads the frames, calls `write_report`, and links the HTML in its
metadata. Statistics are computed elsewhere (`stats.py`, `loop_health.py`); this module
only shows them.

Inputs (any may be None or empty; only rows up to the report week are shown):
- `estimates`: `quality_estimates` (week, agent_id, metric, method, estimate, ci_low, ci_high,
  n_labeled); the `failure_rate` rows of methods hajek, ppi and naive_thumbs are plotted.
- `impact`: `impact_metrics` (stats.COMPARISON_SCHEMA).
- `loop`: `loop_health` output (loop_health.LOOP_HEALTH_SCHEMA).
- `releases`: `release_changes` (change_id, change_week, description, concurrent, ...);
  changes with change_week after the report week are left out.

Files: `<out_dir>/<week>.html` and `<out_dir>/<week>/{estimates,loop_health}.png`, plus
`forest_<change slug>.png` per change. A re-run for the week replaces them (stale PNGs of
that week's folder are removed).
"""

import base64
import html
import io
import re
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib import image as mpl_image
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from feedback_pipeline.impact.changes import CHANGE_SCHEMA
from feedback_pipeline.impact.loop_health import LOOP_HEALTH_SCHEMA
from feedback_pipeline.impact.stats import COMPARISON_SCHEMA, PROXY_SHAPE_METRICS, PSI_LARGE
from feedback_pipeline.estimates.estimators import OUTPUT_SCHEMA as ESTIMATES_SCHEMA

ALPHA = 0.05
PNG_DPI = 100
ESTIMATE_METHODS = {"hajek": ("Hájek (labels)", "tab:blue"), "ppi": ("PPI++ (labels + judge)", "tab:green"),
                    "naive_thumbs": ("naive thumbs-down share", "tab:red")}
SHAPE_METRICS = ("response_chars", *PROXY_SHAPE_METRICS)
LOOP_TABLE_WEEKS = 8
LOOP_NOTE = ("<p>Red crosses mark flags: <b>pass_rate_stalled</b> (the held-out pass rate has not beaten its "
             "last high for several weeks, 4 by default), <b>eval_set_stalled</b> (the set did not grow this week), "
             "<b>input_drift</b> (intent or channel mix PSI vs the previous week "
             f"above the threshold, {PSI_LARGE} by default; dashed line).</p>")
CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 2em}td,th{border:1px solid #ccc;padding:3px 6px}
th{background:#f3f3f3}td.num{text-align:right}img{max-width:100%}.flag{color:#b00;font-weight:bold}"""


# -- small helpers ---------------------------------------------------------------------------

def _frame(df: pl.DataFrame | None, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """The frame, or an empty one with the table's schema when None or column-less."""
    return df if df is not None and df.width else pl.DataFrame(schema=schema)


def _upto(df: pl.DataFrame, column: str, week: date) -> pl.DataFrame:
    return df.filter(pl.col(column).cast(pl.Date) <= week) if column in df.columns else df


def _png(fig: Figure) -> bytes:
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


def _placeholder(text: str) -> Figure:
    fig = Figure(figsize=(8, 1.5))
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, color="#666")
    return fig


def _fmt(value, kind: str = "num") -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    if kind == "pct":
        return f"{100 * value:.1f} %"
    if kind == "pp":
        return f"{100 * value:+.1f} pp"
    if kind == "pp_size":
        return f"{100 * value:.1f} pp"
    if kind == "p":
        return f"{value:.2g}" if value >= 1e-4 else "<1e-4"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _table(rows: list[dict], flag_column: str | None = None) -> str:
    if not rows:
        return "<p><em>No rows.</em></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = []
    for row in rows:
        cls = ' class="flag"' if flag_column and row.get(flag_column) else ""
        cells = "".join(f'<td class="num">{html.escape(v)}</td>' if v[:1] in "+-0123456789<" else
                        f"<td>{html.escape(v)}</td>" for v in row.values())
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _first(df: pl.DataFrame, column: str):
    """The first non-null value of a column, None if there is none (or no such column)."""
    values = df[column].drop_nulls() if column in df.columns else pl.Series([])
    return values[0] if len(values) else None


def _slug(change_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "-", change_id).strip("-") or "change"


# -- (a) estimates over weeks ------------------------------------------------------------------

def _estimates_figure(est: pl.DataFrame) -> Figure:
    rows = est.filter((pl.col("metric") == "failure_rate") & pl.col("method").is_in(list(ESTIMATE_METHODS)))
    if rows.is_empty():
        return _placeholder("No failure-rate estimates up to this week.")
    agents = sorted(rows["agent_id"].unique().to_list())
    fig = Figure(figsize=(9, 2.8 * len(agents)), layout="constrained")
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
        ax.legend(fontsize=8, loc="upper left")
    return fig


def _estimates_table(est: pl.DataFrame) -> str:
    rows = est.filter(pl.col("metric") == "failure_rate")
    if rows.is_empty():
        return _table([])
    last = rows.filter(pl.col("week") == pl.col("week").max().over("agent_id"))
    out = []
    for agent in sorted(last["agent_id"].unique().to_list()):
        row = {"agent": agent}
        for method, (label, _) in ESTIMATE_METHODS.items():
            r = last.filter((pl.col("agent_id") == agent) & (pl.col("method") == method))
            if r.height:
                row["week"] = str(r["week"][0])
                row[label] = (f"{_fmt(r['estimate'][0], 'pct')} [{_fmt(r['ci_low'][0], 'pct')}, "
                              f"{_fmt(r['ci_high'][0], 'pct')}]") if r["estimate"][0] is not None else "n/a"
                if "n_labeled" in r.columns and method == "hajek":
                    row["labels"] = _fmt(r["n_labeled"][0])
        out.append({k: row.get(k, "") for k in ["agent", "week", *[v[0] for v in ESTIMATE_METHODS.values()],
                                                "labels"]})
    return _table(out)


# -- (b) one forest plot per change ------------------------------------------------------------

def _is_rate(metric: str) -> bool:
    return metric.split(":", 1)[0].endswith("_rate")


def _label(row: dict) -> str:
    return row["metric"] if row["method"] in ("mean", None) else f"{row['metric']} [{row['method']}]"


def _forest_figure(change_id: str, rows: pl.DataFrame, flagged: bool, reason: str | None) -> Figure:
    shown = rows.filter(pl.col("effect").is_not_null()).to_dicts()
    rates = [r for r in shown if _is_rate(r["metric"])]
    other = [r for r in shown if not _is_rate(r["metric"]) and r.get("mean_before")]
    if not rates and not other:
        return _placeholder(f"{change_id}: no metric had enough data for an effect.")
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
            ax.annotate(f"p_adj={_fmt(r['p_adjusted'], 'p')}", (1.0, yi), xycoords=("axes fraction", "data"),
                        xytext=(4, 0), textcoords="offset points", va="center", fontsize=8,
                        color=color)
        ax.axvline(0, color="#555", lw=1)
        ax.set_yticks(y, [_label(r) for r in part], fontsize=8)
        ax.set_ylim(-0.7, len(part) - 0.3)
        ax.set_xlabel("after − before, percentage points" if scale else "after − before, % of before")
        ax.grid(axis="x", alpha=0.3)
    title = f"{change_id}   (filled: BH-adjusted p < {ALPHA})"
    if flagged:
        title += f"\nPROXY GAMING: {reason or 'flagged'}"
    fig.suptitle(title, fontsize=10, color="tab:red" if flagged else "black")
    return fig


def _forest_table(rows: pl.DataFrame) -> str:
    out = []
    for r in rows.to_dicts():
        rate = _is_rate(r["metric"])
        kind = "pp" if rate else "num"
        ci = f"[{_fmt(r['ci_low'], kind)}, {_fmt(r['ci_high'], kind)}]" if r["ci_low"] is not None else ""
        out.append({"metric": _label(r), "before": _fmt(r.get("mean_before"), "pct" if rate else "num"),
                    "after": _fmt(r.get("mean_after"), "pct" if rate else "num"),
                    "effect": _fmt(r["effect"], kind), "95 % CI": ci, "p": _fmt(r["p_value"], "p"),
                    "p (BH)": _fmt(r["p_adjusted"], "p"), "n before": _fmt(r.get("n_before")),
                    "n after": _fmt(r.get("n_after")), "MDE": _fmt(r.get("mde"), "pp_size" if rate else "num"),
                    "notes": r.get("notes") or ""})
    return _table(out)


def _change_order(impact: pl.DataFrame, releases: pl.DataFrame, week: date) -> list[tuple[str, dict]]:
    """(change_id, release row or {}) for every change up to the week, newest first."""
    info: dict[str, dict] = {}
    if "change_id" in releases.columns:
        info = {r["change_id"]: r for r in _upto(releases, "change_week", week).to_dicts()}
    ids = set(impact["change_id"].unique().to_list()) if "change_id" in impact.columns else set()
    if "change_week" in releases.columns:
        future = set(releases.filter(pl.col("change_week").cast(pl.Date) > week)["change_id"].to_list())
        ids -= future
    ids |= set(info)
    return sorted(((c, info.get(c, {})) for c in ids),
                  key=lambda t: (str(t[1].get("change_week") or ""), t[0]), reverse=True)


# -- (c) loop health ------------------------------------------------------------------------------

def _loop_figure(loop: pl.DataFrame) -> Figure:
    if loop.is_empty():
        return _placeholder("No loop-health rows up to this week.")
    agents = sorted(loop["agent_id"].unique().to_list())
    fig = Figure(figsize=(12, 2.8 * len(agents)), layout="constrained")
    axes = fig.subplots(len(agents), 3, squeeze=False)
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
        ax.set_title("eval set and label throughput", loc="left", fontsize=10)
        ax = row[2]
        ax.plot(x, col("intent_psi"), "o-", label="intent PSI")
        ax.plot(x, col("channel_psi"), "s-", label="channel PSI")
        ax.plot(x, col("share_rated"), ":", color="#777", label="share rated")
        ax.axhline(PSI_LARGE, color="tab:red", ls="--", lw=1)
        flag(ax, "input_drift", np.fmax(col("intent_psi"), col("channel_psi")))
        ax.set_title("input drift vs previous week", loc="left", fontsize=10)
        for ax in row:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="best")
            ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    return fig


def _loop_table(loop: pl.DataFrame) -> str:
    recent = loop.sort("week").group_by("agent_id", maintain_order=True).tail(LOOP_TABLE_WEEKS)
    out = []
    for r in recent.sort("agent_id", "week").to_dicts():
        ci = f"[{_fmt(r['pass_rate_ci_low'], 'pct')}, {_fmt(r['pass_rate_ci_high'], 'pct')}]" \
            if r.get("pass_rate") is not None else ""
        out.append({"agent": r["agent_id"], "week": str(r["week"]),
                    "pass rate": f"{_fmt(r.get('pass_rate'), 'pct')} {ci}".strip(),
                    "cases": _fmt(r.get("eval_set_size")), "coverage": _fmt(r.get("category_coverage"), "pct"),
                    "labels": _fmt(r.get("labels_imported")), "κ": _fmt(r.get("judge_kappa")),
                    "rated": _fmt(r.get("share_rated"), "pct"), "PSI intent": _fmt(r.get("intent_psi")),
                    "PSI channel": _fmt(r.get("channel_psi")), "flags": r.get("flags") or ""})
    return _table(out, flag_column="flags")


# -- the report ---------------------------------------------------------------------------------

def _img(data: bytes, alt: str) -> str:
    return (f'<img alt="{html.escape(alt)}" src="data:image/png;base64,'
            f'{base64.b64encode(data).decode("ascii")}">')


def write_report(out_dir: Path, week: str, estimates: pl.DataFrame | None, impact: pl.DataFrame | None,
                 loop: pl.DataFrame | None, releases: pl.DataFrame | None) -> dict[str, Path]:
    """Write `<out_dir>/<week>.html` and its PNGs; returns {"html" | PNG stem: path}."""
    report_week = date.fromisoformat(week)
    out_dir = Path(out_dir)
    png_dir = out_dir / week
    png_dir.mkdir(parents=True, exist_ok=True)
    est = _upto(_frame(estimates, ESTIMATES_SCHEMA), "week", report_week)
    loop_rows = _upto(_frame(loop, LOOP_HEALTH_SCHEMA), "week", report_week)
    impact_rows, release_rows = _frame(impact, COMPARISON_SCHEMA), _frame(releases, CHANGE_SCHEMA)

    figures: list[tuple[str, Figure | None, str, str]] = [  # (stem, figure, heading, html under it)
        ("estimates", _estimates_figure(est), "Failure-rate estimates vs the naive thumbs rate",
         _estimates_table(est))]
    used: set[str] = set()
    for change_id, info in _change_order(impact_rows, release_rows, report_week):
        rows = impact_rows.filter(pl.col("change_id") == change_id) if impact_rows.height else impact_rows
        flagged = bool(rows["proxy_gaming"].fill_null(False).any()) if rows.height else False
        reason = _first(rows, "proxy_gaming_reason")
        stem = f"forest_{_slug(change_id)}"
        if stem in used:
            stem = f"{stem}-{len(used)}"
        used.add(stem)
        figure = _forest_figure(change_id, rows, flagged, reason) if rows.height else _placeholder(
            f"{change_id}: no impact rows yet.")
        facts = [info.get("description"), f"week {info['change_week']}" if info.get("change_week") else None,
                 "concurrent arms" if info.get("concurrent") else None,
                 _first(rows, "window")]
        text = "<p>" + html.escape(" · ".join(str(f) for f in facts if f)) + "</p>"
        if flagged:
            text += f'<p class="flag">Proxy gaming: {html.escape(reason or "flagged")}</p>'
        figures.append((stem, figure, f"Change {change_id}", text + (_forest_table(rows) if rows.height else "")))
    if len(figures) == 1:
        figures.append(("", None, "Changes", "<p><em>No changes up to this week.</em></p>"))
    figures.append(("loop_health", _loop_figure(loop_rows), "Loop health", LOOP_NOTE + _loop_table(loop_rows)))

    written: dict[str, Path] = {}
    sections = []
    for stem, figure, heading, below in figures:
        section = f"<h2>{html.escape(heading)}</h2>"
        if figure is not None:
            data = _png(figure)
            path = png_dir / f"{stem}.png"
            path.write_bytes(data)
            written[stem] = path
            section += _img(data, heading)
        sections.append(section + below)
    for stale in png_dir.glob("*.png"):
        if stale not in written.values():
            stale.unlink()
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>Impact report {html.escape(week)}</title><style>{CSS}</style></head><body>"
            f"<h1>Impact report, week of {html.escape(week)}</h1>{''.join(sections)}</body></html>\n")
    written["html"] = out_dir / f"{week}.html"
    written["html"].write_text(page, encoding="utf-8")
    return written
