import hashlib
import shutil

import pytest

from feedback_pipeline.rubrics import RUBRICS_DIR, RubricError, load_rubric, rubric_versions

CATEGORIES = (
    "could_not_answer", "wrong_information", "tone_wrong", "tool_failed",
    "policy_violation", "other",
)


def test_agent_quality_v1_loads_from_package_data():
    rubric = load_rubric("agent_quality", "v1")
    assert (rubric.id, rubric.version, rubric.categories) == ("agent_quality", "v1", CATEGORIES)
    assert rubric.content_hash == hashlib.sha256(rubric.path.read_bytes()).hexdigest()
    assert rubric.path.parent.parent == RUBRICS_DIR
    assert rubric.instructions.startswith("# Agent quality") and "---" not in rubric.instructions[:5]
    schema = rubric.output_schema
    assert schema["required"] == ["verdict", "failure_category", "rationale"]
    assert schema["additionalProperties"] is False  # strict structured output needs it
    assert schema["properties"]["failure_category"]["enum"] == [*CATEGORIES, None]
    assert "v1" in rubric_versions("agent_quality")


def _copy_v1(tmp_path, version, extra=""):
    folder = tmp_path / "agent_quality"
    folder.mkdir(exist_ok=True)
    text = (RUBRICS_DIR / "agent_quality" / "v1.md").read_text()
    text = text.replace("version: v1", f"version: {version}", 1) + extra
    (folder / f"{version}.md").write_text(text)


def test_versions_sort_numerically_and_latest_is_default(tmp_path):
    for version in ("v1", "v10", "v2"):
        _copy_v1(tmp_path, version, extra=f"\nRevision {version}.\n")
    assert rubric_versions("agent_quality", tmp_path) == ["v1", "v2", "v10"]
    assert load_rubric("agent_quality", rubrics_dir=tmp_path).version == "v10"
    hashes = {load_rubric("agent_quality", v, tmp_path).content_hash for v in ("v1", "v2", "v10")}
    assert len(hashes) == 3


def test_unknown_rubric_or_version_is_a_clear_error(tmp_path):
    with pytest.raises(RubricError, match="not found"):
        load_rubric("agent_quality", "v999")
    with pytest.raises(RubricError, match="no rubric versions"):
        load_rubric("no_such_rubric", rubrics_dir=tmp_path)


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("id: agent_quality", "id: something_else", "header says"),
        ("  - other\n", "", "enum differs"),
        ("  - tone_wrong\n", "  - tone_wrong\n  - tone_wrong\n", "without repeats"),
        ("---\n# Agent", "# Agent", "YAML header"),
    ],
)
def test_inconsistent_header_is_rejected(tmp_path, old, new, message):
    folder = tmp_path / "agent_quality"
    folder.mkdir()
    shutil.copy(RUBRICS_DIR / "agent_quality" / "v1.md", folder / "v1.md")
    path = folder / "v1.md"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(RubricError, match=message):
        load_rubric("agent_quality", "v1", tmp_path)
