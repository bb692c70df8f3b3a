"""Versioned rubric files (`rubrics/<name>/<version>.md`, a YAML header plus Markdown) and
their loader: the one source of the failure categories every stage uses.

The same rubric id and version name a judge's verdicts and a human's labels, so a
rubric file is never edited once used: a change is a new version file. Loading
only; how a rubric is sent to a judge lives in `scoring`, how it becomes a labeling
config in `label_studio`.
"""

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUBRICS_DIR = Path(__file__).resolve().parent
# The rubric every stage grades against (a file per version under rubrics/agent_quality/).
RUBRIC_ID = "agent_quality"

_FRONT_MATTER = re.compile(r"\A---\r?\n(.*?)\r?\n---\r?\n(.*)\Z", re.DOTALL)
_VERSION_NAME = re.compile(r"v(\d+)")


class RubricError(ValueError):
    """A rubric file is missing or its header is inconsistent."""


@dataclass(frozen=True)
class Rubric:
    id: str
    version: str
    categories: tuple[str, ...]
    instructions: str = field(repr=False)
    content_hash: str  # sha256 hex of the file's bytes
    output_schema: dict[str, Any] = field(repr=False)
    path: Path = field(repr=False)


def rubric_versions(name: str, rubrics_dir: Path | None = None) -> list[str]:
    """The versions of rubric `name` on disk, oldest first (v2 before v10)."""
    folder = (rubrics_dir or RUBRICS_DIR) / name
    names = [p.stem for p in folder.glob("v*.md") if _VERSION_NAME.fullmatch(p.stem)]
    return sorted(names, key=lambda v: int(v[1:]))


def known_rubrics(name: str = RUBRIC_ID) -> dict[str, tuple[str, ...]]:
    """{version: failure categories} of every version of rubric `name` on disk."""
    return {v: load_rubric(name, v).categories for v in rubric_versions(name)}


def failure_categories(version: str | None = None, name: str = RUBRIC_ID) -> tuple[str, ...]:
    """The failure categories of a rubric version (the newest when None)."""
    return load_rubric(name, version).categories


def load_rubric(name: str, version: str | None = None, rubrics_dir: Path | None = None) -> Rubric:
    """Load `rubrics/<name>/<version>.md`; `version=None` loads the newest version."""
    if version is None:
        versions = rubric_versions(name, rubrics_dir)
        if not versions:
            raise RubricError(f"no rubric versions under {(rubrics_dir or RUBRICS_DIR) / name}")
        version = versions[-1]
    path = (rubrics_dir or RUBRICS_DIR) / name / f"{version}.md"
    if not path.is_file():
        raise RubricError(f"rubric file not found: {path}")
    raw = path.read_bytes()
    match = _FRONT_MATTER.match(raw.decode("utf-8"))
    if match is None:
        raise RubricError(f"{path}: expected a YAML header between '---' lines")
    import yaml  # only when a rubric file is read

    header = yaml.safe_load(match.group(1)) or {}
    rubric = Rubric(
        id=str(header.get("id", "")),
        version=str(header.get("version", "")),
        categories=tuple(header.get("categories") or ()),
        instructions=match.group(2).strip(),
        content_hash=hashlib.sha256(raw).hexdigest(),
        output_schema=header.get("output_schema") or {},
        path=path,
    )
    _check(rubric, name, version)
    return rubric


def _check(rubric: Rubric, name: str, version: str) -> None:
    where = rubric.path
    if rubric.id != name or rubric.version != version:
        raise RubricError(
            f"{where}: header says {rubric.id}/{rubric.version}, file is {name}/{version}"
        )
    if not rubric.categories or len(set(rubric.categories)) != len(rubric.categories):
        raise RubricError(f"{where}: categories must be a non-empty list without repeats")
    props = rubric.output_schema.get("properties", {})
    if set(props) != {"verdict", "failure_category", "rationale"}:
        raise RubricError(
            f"{where}: output_schema needs properties verdict, failure_category, rationale"
        )
    schema_categories = [c for c in props["failure_category"].get("enum", []) if c is not None]
    if tuple(schema_categories) != rubric.categories:
        raise RubricError(f"{where}: output_schema failure_category enum differs from categories")
