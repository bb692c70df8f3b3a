"""`write_report`: the week's report page, its sections in order, and the files it writes.

Inputs (any may be None or empty; only rows up to the report week are shown):
- `estimates`: `quality_estimates`; the `failure_rate` rows of methods hajek, ppi and
  naive_thumbs are plotted.
- `impact`: `impact_metrics`.
- `loop`: `loop_health`.
- `releases`: `release_changes`; changes with change_week after the report week are left out.
- `planning`: the week's `annotation_queue` planning figure (`sampling.planning.labels_needed_table`).

Files: `<out_dir>/<week>.html` and `<out_dir>/<week>/{estimates,loop_health}.png`, plus
`forest_<change slug>.png` per change. A re-run for the week replaces them (stale PNGs of
that week's folder are removed). Figures and tables are built in `figures.py` / `tables.py`;
a figure whose inputs did not change is taken from `<out_dir>/.figure_cache/` (same bytes).
"""

import base64
import hashlib
import html
from datetime import date
from pathlib import Path

import polars as pl

from feedback_pipeline.estimates.schemas import QualityEstimates
from feedback_pipeline.files import atomic_write
from feedback_pipeline.impact.schemas import ImpactMetrics, LoopHealth, ReleaseChanges
from feedback_pipeline.impact.weekly_report import tables
from feedback_pipeline.impact.weekly_report.cells import first, frame_or_empty, slug, upto

CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 2em}td,th{border:1px solid #ccc;padding:3px 6px}
th{background:#f3f3f3}td.num{text-align:right}img{max-width:100%}.flag{color:#b00;font-weight:bold}"""


FIGURE_CACHE = ".figure_cache"


def _drawn(cache: Path, figures, draw, *args) -> bytes:
    """The PNG of `draw(*args)`, drawn once per distinct input: every automation refresh
    rewrites the page, but most of its figures show data that did not change (matplotlib
    takes ~0.3 s a figure). The key is the function, its arguments' content and the
    drawing code itself, so a change to either draws anew."""
    digest = hashlib.sha256(_FIGURES_CODE.setdefault("hash", hashlib.sha256(
        Path(figures.__file__).read_bytes()).hexdigest()).encode())
    digest.update(draw.__name__.encode())
    for arg in args:
        digest.update(arg.write_csv().encode() if isinstance(arg, pl.DataFrame) else repr(arg).encode())
    path = cache / f"{digest.hexdigest()}.png"
    if path.is_file():
        return path.read_bytes()
    data = figures.png(draw(*args))
    atomic_write(path, data)
    return data


_FIGURES_CODE: dict[str, str] = {}


def _img(data: bytes, alt: str) -> str:
    return (f'<img alt="{html.escape(alt)}" src="data:image/png;base64,'
            f'{base64.b64encode(data).decode("ascii")}">')


def _change_sections(figures, impact_rows: pl.DataFrame, release_rows: pl.DataFrame, week: date) -> list[tuple]:
    """(stem, figure as (draw function, *its arguments), heading, html under it) of every change
    up to the week, newest first."""
    sections, used = [], set()
    for change_id, info in tables.change_order(impact_rows, release_rows, week):
        rows = impact_rows.filter(pl.col("change_id") == change_id) if impact_rows.height else impact_rows
        flagged = bool(rows["proxy_gaming"].fill_null(False).any()) if rows.height else False
        reason = first(rows, "proxy_gaming_reason")
        stem = f"forest_{slug(change_id)}"
        if stem in used:
            stem = f"{stem}-{len(used)}"
        used.add(stem)
        figure = ((figures.forest_figure, change_id, rows, flagged, reason) if rows.height else
                  (figures.placeholder, f"{change_id}: no impact rows yet."))
        facts = [info.get("description"), f"week {info['change_week']}" if info.get("change_week") else None,
                 "concurrent arms" if info.get("concurrent") else None,
                 first(rows, "window")]
        text = "<p>" + html.escape(" · ".join(str(f) for f in facts if f)) + "</p>"
        if flagged:
            text += f'<p class="flag">Proxy gaming: {html.escape(reason or "flagged")}</p>'
        sections.append((stem, figure, f"Change {change_id}", text + (tables.forest_table(rows) if rows.height else "")))
    return sections


def write_report(out_dir: Path, week: str, estimates: pl.DataFrame | None, impact: pl.DataFrame | None,
                 loop: pl.DataFrame | None, releases: pl.DataFrame | None,
                 planning: pl.DataFrame | None = None) -> dict[str, Path]:
    """Write `<out_dir>/<week>.html` and its PNGs; returns {"html" | PNG stem: path}."""
    from feedback_pipeline.impact.weekly_report import figures  # matplotlib: only when a report is drawn

    report_week = date.fromisoformat(week)
    out_dir = Path(out_dir)
    png_dir = out_dir / week
    png_dir.mkdir(parents=True, exist_ok=True)
    est = upto(frame_or_empty(estimates, QualityEstimates), "week", report_week)
    loop_rows = upto(frame_or_empty(loop, LoopHealth), "week", report_week)
    impact_rows, release_rows = frame_or_empty(impact, ImpactMetrics), frame_or_empty(releases, ReleaseChanges)

    sections = [("estimates", (figures.estimates_figure, est), "Failure-rate estimates vs the naive thumbs rate",
                 tables.estimates_table(est))]
    if planning is not None and planning.height:
        sections.append(("", None, "Labels needed next week", tables.planning_table(planning)))
    sections += _change_sections(figures, impact_rows, release_rows, report_week) or [
        ("", None, "Changes", "<p><em>No changes up to this week.</em></p>")]
    sections.append(("loop_health", (figures.loop_figure, loop_rows), "Loop health",
                     tables.LOOP_NOTE + tables.loop_table(loop_rows)))

    written: dict[str, Path] = {}
    parts = []
    for stem, figure, heading, below in sections:
        part = f"<h2>{html.escape(heading)}</h2>"
        if figure is not None:
            data = _drawn(out_dir / FIGURE_CACHE, figures, *figure)
            path = png_dir / f"{stem}.png"
            atomic_write(path, data)  # a reader never sees half a figure
            written[stem] = path
            part += _img(data, heading)
        parts.append(part + below)
    for stale in png_dir.glob("*.png"):
        if stale not in written.values():
            stale.unlink()
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>Impact report {html.escape(week)}</title><style>{CSS}</style></head><body>"
            f"<h1>Impact report, week of {html.escape(week)}</h1>{''.join(parts)}</body></html>\n")
    written["html"] = out_dir / f"{week}.html"
    atomic_write(written["html"], page)
    return written
