import base64
import io
import re
from datetime import date, timedelta
from html.parser import HTMLParser

import numpy as np
import polars as pl
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from feedback_pipeline.estimates.schemas import QualityEstimates
from feedback_pipeline.frames import polars_schema
from feedback_pipeline.impact.compare import compare_sides
from feedback_pipeline.impact.loop_health import loop_health
from feedback_pipeline.impact.schemas import ImpactMetrics, LoopHealth, ReleaseChanges
from feedback_pipeline.impact.weekly_report import figures, write_report
from feedback_pipeline_tests.test_loop_health import mix, snapshots

ESTIMATES_SCHEMA, COMPARISON_SCHEMA = polars_schema(QualityEstimates), polars_schema(ImpactMetrics)
LOOP_HEALTH_SCHEMA, CHANGE_SCHEMA = polars_schema(LoopHealth), polars_schema(ReleaseChanges)

WEEK = "2026-02-16"
W0 = date(2026, 1, 5)
GAMING = "refunds/prompt_version/p1->p2@2026-02-02"
HELPFUL = "refunds/model/m1->m2@2026-01-19"
FUTURE = "refunds/model/m2->m3@2026-03-02"
VOID = {"img", "meta", "br", "hr", "link", "input", "source"}


def turns(rng, n: int, escalation: float, chars: float, refusal: float) -> pl.DataFrame:
    return pl.DataFrame({
        "trace_id": [f"t{i}-{rng.integers(1 << 40)}" for i in range(n)],
        "conversation_id": [f"c{i // 2}-{rng.integers(1 << 40)}" for i in range(n)],
        "escalated": rng.random(n) < escalation, "escalation_reason": ["tool_failed"] * n,
        "thumbs": pl.Series([("down" if u < 0.05 else None) for u in rng.random(n)], dtype=pl.String),
        "user_rewrote": rng.random(n) < 0.1, "tool_error_count": (rng.random(n) < 0.05).astype(np.int64),
        "latency_ms": rng.normal(900, 100, n), "response_chars": rng.normal(chars, 40, n),
        "is_refusal": rng.random(n) < refusal, "has_disclaimer": rng.random(n) < 0.05,
        "judge_verdict": np.where(rng.random(n) < 0.2, "fail", "pass"),
    })


def change_rows(change_id: str, before: pl.DataFrame, after: pl.DataFrame) -> pl.DataFrame:
    agent, dimension, versions = change_id.split("@")[0].split("/")
    old, new = versions.split("->")
    return compare_sides(before, after).with_columns(
        agent_id=pl.lit(agent), change_id=pl.lit(change_id), dimension=pl.lit(dimension),
        before_version=pl.lit(old), after_version=pl.lit(new), design=pl.lit("sequential"),
        window=pl.lit("2 weeks before vs 2 weeks after"),
    ).select(list(COMPARISON_SCHEMA))


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(3)
    impact = pl.concat([
        change_rows(GAMING, turns(rng, 1500, 0.10, 400, 0.02), turns(rng, 1500, 0.07, 250, 0.06)),
        change_rows(HELPFUL, turns(rng, 1500, 0.10, 400, 0.02), turns(rng, 1500, 0.06, 400, 0.02)),
        change_rows(FUTURE, turns(rng, 300, 0.1, 400, 0.02), turns(rng, 300, 0.1, 400, 0.02)),
    ])
    releases = pl.DataFrame({
        "change_id": [GAMING, HELPFUL, FUTURE], "agent_id": ["refunds"] * 3,
        "change_week": [date(2026, 2, 2), date(2026, 1, 19), date(2026, 3, 2)],
        "description": ["shorter system prompt", "model upgrade", "next model"], "concurrent": [False, True, False],
    })
    weeks = [W0 + timedelta(weeks=i) for i in range(7)]
    estimates = pl.DataFrame([
        {"week": w, "agent_id": a, "metric": "failure_rate", "method": m, "estimate": e, "ci_low": e - 0.03,
         "ci_high": e + 0.03, "n_labeled": 150}
        for a in ("refunds", "billing") for i, w in enumerate(weeks)
        for m, e in (("hajek", 0.2 - 0.01 * i), ("ppi", 0.19 - 0.01 * i), ("naive_thumbs", 0.45))])
    loop = loop_health(mix(7), estimates, snapshots([0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]), None, None)
    return {"estimates": estimates, "impact": impact, "loop": loop, "releases": releases}


@pytest.fixture(scope="module")
def written(inputs, tmp_path_factory):
    """One full report (rendering costs ~0.3 s a figure), read by several tests."""
    out_dir = tmp_path_factory.mktemp("reports")
    return out_dir, write_report(out_dir, WEEK, **inputs)


class _Checker(HTMLParser):
    """Collects every URL-bearing attribute and checks that tags nest and close."""

    def __init__(self):
        super().__init__()
        self.urls, self.stack, self.errors, self.images = [], [], [], []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "action", "poster"):
                self.urls.append(value or "")
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unexpected </{tag}>")


def check_html(path) -> _Checker:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    assert checker.urls and all(u.startswith("data:image/png;base64,") for u in checker.urls)
    assert not re.search(r"<(script|link|iframe)\b", text, re.I) and "url(" not in text and "@import" not in text
    return checker


def check_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 100


def test_report_is_self_contained_with_valid_pngs(written):
    out_dir, out = written
    html_path = out_dir / f"{WEEK}.html"
    assert out["html"] == html_path
    pngs = {k: v for k, v in out.items() if k != "html"}
    assert set(pngs) == {"estimates", "loop_health", "forest_refunds-prompt_version-p1-p2-2026-02-02",
                         "forest_refunds-model-m1-m2-2026-01-19"}  # the change after the week is left out
    for stem, path in pngs.items():
        assert path == out_dir / WEEK / f"{stem}.png"
        check_png(path)
    checker = check_html(html_path)
    embedded = {base64.b64decode(src.split(",", 1)[1]) for src in checker.images}
    assert embedded == {p.read_bytes() for p in pngs.values()}
    text = html_path.read_text(encoding="utf-8")
    assert text.index(GAMING.replace(">", "&gt;")) < text.index(HELPFUL.replace(">", "&gt;"))  # newest first
    assert "next model" not in text


def test_proxy_gaming_and_adjusted_p_are_visible(inputs, written):
    impact = inputs["impact"]
    assert impact.filter(pl.col("change_id") == GAMING)["proxy_gaming"].all()
    assert not impact.filter(pl.col("change_id") == HELPFUL)["proxy_gaming"].any()
    out = written[1]
    text = out["html"].read_text(encoding="utf-8")
    assert text.count('class="flag">Proxy gaming:') == 1 and "response_chars" in text
    assert "p (BH)" in text and "shorter system prompt" in text and "concurrent arms" in text
    assert "pass_rate_stalled" in text  # the loop table shows its flags


def test_empty_inputs_still_give_a_valid_report(tmp_path):
    for i, frames in enumerate([
        dict(estimates=None, impact=None, loop=None, releases=None),
        dict(estimates=pl.DataFrame(schema=ESTIMATES_SCHEMA), impact=pl.DataFrame(schema=COMPARISON_SCHEMA),
             loop=pl.DataFrame(schema=LOOP_HEALTH_SCHEMA), releases=pl.DataFrame(schema=CHANGE_SCHEMA)),
    ]):
        out = write_report(tmp_path / str(i), WEEK, **frames)
        assert set(out) == {"html", "estimates", "loop_health"}
        for key in ("estimates", "loop_health"):
            check_png(out[key])
        assert len(check_html(out["html"]).images) == 2
        assert "No changes up to this week." in out["html"].read_text(encoding="utf-8")


def test_rerun_is_deterministic_and_drops_stale_pngs(inputs, written, tmp_path):
    snapshot = {k: p.read_bytes() for k, p in written[1].items()}
    out_dir = tmp_path
    again = write_report(out_dir, WEEK, **inputs)
    assert {k: p.read_bytes() for k, p in again.items()} == snapshot
    fewer = write_report(out_dir, WEEK, **{**inputs, "impact": None, "releases": None})
    assert sorted(p.name for p in (out_dir / WEEK).glob("*.png")) == ["estimates.png", "loop_health.png"]
    assert set(fewer) == {"html", "estimates", "loop_health"}


def test_bad_week_is_rejected(tmp_path):
    with pytest.raises(ValueError):
        write_report(tmp_path, "week-7", None, None, None, None)


def test_png_bytes_are_what_savefig_writes(inputs):
    """`figures.png` draws once instead of twice; the file must not change for that."""
    rows = inputs["impact"].filter(pl.col("change_id") == GAMING)
    for make in (lambda: figures.forest_figure(GAMING, rows, True, "shorter answers"),
                 lambda: figures.loop_figure(inputs["loop"]), lambda: figures.placeholder("nothing")):
        fig = make()
        FigureCanvasAgg(fig)
        saved = io.BytesIO()
        fig.savefig(saved, format="png", dpi=100, metadata={"Software": None})
        assert figures.png(make()) == saved.getvalue()


def test_unchanged_figures_are_not_drawn_again(inputs, tmp_path, monkeypatch):
    """Automation rewrites a report whenever one input changes: figures whose data did not
    change come from the cache (same bytes), only the changed one is drawn."""
    from feedback_pipeline.impact.weekly_report import figures

    first = write_report(tmp_path, WEEK, **inputs)
    before = {stem: path.read_bytes() for stem, path in first.items() if stem != "html"}
    drawn = []
    real_png = figures.png
    monkeypatch.setattr(figures, "png", lambda fig: drawn.append(fig) or real_png(fig))
    again = write_report(tmp_path, WEEK, **inputs)
    assert drawn == [] and {s: p.read_bytes() for s, p in again.items() if s != "html"} == before
    changed = {**inputs, "loop": inputs["loop"].with_columns(pl.col("pass_rate") * 0.5)}
    write_report(tmp_path, WEEK, **changed)
    assert len(drawn) == 1  # the loop-health figure only


def test_the_planning_figure_is_shown_per_agent(inputs, tmp_path):
    planning = pl.DataFrame({"agent_id": ["refunds", "billing"], "labels_for_failure_rate": [612, 488],
                             "largest_category": ["wrong_information", "tone"],
                             "labels_for_largest_category": [2301, 1750]})
    page = write_report(tmp_path, WEEK, **inputs, planning=planning)["html"].read_text()
    section = page.split("Labels needed next week")[1].split("<h2>")[0]
    assert section.index("billing") < section.index("refunds")  # one row per agent, sorted
    for cell in ("612", "488", "wrong_information", "2301", "1750"):
        assert f">{cell}<" in section
    assert "Labels needed next week" not in write_report(tmp_path / "none", WEEK, **inputs)["html"].read_text()
