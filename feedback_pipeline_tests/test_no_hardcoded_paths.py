"""What docs/scaling.md relies on, checked on the source: asset modules name no place
and no engine. Every location comes from the `home` resource (FeedbackHome), every
warehouse connection from `FeedbackHome.warehouse()`, so moving the warehouse or the
home folder is a change to `resources.py`, not to the assets."""

import ast
import re
from pathlib import Path

import pytest

from feedback_pipeline.definitions import ASSETS

PACKAGE = Path(__file__).resolve().parent.parent / "feedback_pipeline"
ASSET_MODULES = sorted(PACKAGE.glob("*/assets.py"))
STAGES = {"ingest", "scoring", "sampling", "labels", "evalset", "impact"}

# A string that is a location: absolute, home- or cwd-relative, a Windows drive, a
# relative path with a folder and a file extension, or the home/warehouse by name.
PATH_LIKE = re.compile(
    r"^(/[\w.-]|~|\.{1,2}[/\\]|[A-Za-z]:[/\\])"
    r"|^[\w.-]+(/[\w.-]+)+\.[A-Za-z0-9]{1,8}$"
    r"|\.feedback_home|warehouse\.duckdb|analyst\.duckdb"
)
# Calls that reach a place or an engine without the resource.
FORBIDDEN_ATTRIBUTES = {
    ("duckdb", "connect"), ("sqlite3", "connect"), ("psycopg2", "connect"), ("os", "getenv"),
    ("os", "environ"), ("Path", "home"), ("Path", "cwd"), ("tempfile", "mkdtemp"),
    ("tempfile", "TemporaryDirectory"), ("tempfile", "NamedTemporaryFile"),
}
FORBIDDEN_IMPORTS = {"duckdb", "sqlite3", "psycopg2", "tempfile"}
# Modules that may open a DuckDB *file*, and why; the demo tooling (demo/) may too.
FILE_CONNECT_ALLOWED = {
    "resources.py": "the warehouse itself",
    "warehouse.py": "the warehouse itself",
    "warehouse_location.py": "the warehouse itself: the DuckDB file, or a DuckLake's catalog",
    "publish.py": "the analysts' views database under exports/, not the warehouse",
}


def _prose(tree: ast.AST) -> set[int]:
    """ids of string nodes that are prose: docstrings and description=... arguments."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
        if isinstance(node, ast.keyword) and node.arg == "description":
            ids |= {id(n) for n in ast.walk(node.value)}
    return ids


def problems_in(source: str) -> list[str]:
    """Hard-coded locations and direct engine or environment access in one module."""
    tree = ast.parse(source)
    prose = _prose(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            if PATH_LIKE.search(node.value):
                found.append(f"line {node.lineno}: path-like literal {node.value!r}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in FORBIDDEN_ATTRIBUTES:
                found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in FORBIDDEN_IMPORTS]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_IMPORTS:
            found.append(f"line {node.lineno}: from {node.module} import ...")
    return found


def test_every_stage_has_an_asset_module():
    assert {p.parent.name for p in ASSET_MODULES} >= STAGES


@pytest.mark.parametrize("module", ASSET_MODULES, ids=lambda p: p.parent.name)
def test_asset_module_names_no_place_and_no_engine(module):
    assert problems_in(module.read_text("utf-8")) == []


def test_the_check_catches_what_it_should():
    bad = '''"""A docstring may say /var/data/warehouse.duckdb."""
import duckdb, os
from pathlib import Path
con = duckdb.connect("/data/warehouse.duckdb")
out = Path("exports/queue.csv")
home = os.environ["HOME"]
spec = dict(description="lands in labels/inbox/a.csv")
'''
    found = problems_in(bad)
    assert any("import duckdb" in f for f in found)
    assert any("duckdb.connect" in f for f in found)
    assert any("'/data/warehouse.duckdb'" in f for f in found)
    assert any("'exports/queue.csv'" in f for f in found)
    assert any("os.environ" in f for f in found)
    assert not any("labels/inbox" in f or "/var/data" in f for f in found)  # prose is fine
    ok = 'folder = home.exports / "adjudication"\n(folder / "adjudication.csv").write_text("")\nk = "dagster/row_count"\n'
    assert problems_in(ok) == []


def test_duckdb_files_are_opened_only_where_the_docs_say():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in FILE_CONNECT_ALLOWED or rel.startswith("demo/"):
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "connect"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "duckdb"):
                target = node.args[0] if node.args else next(
                    (k.value for k in node.keywords if k.arg == "database"), None)
                in_memory = target is None or (isinstance(target, ast.Constant) and target.value in ("", ":memory:"))
                assert in_memory, f"{rel}:{node.lineno} opens a DuckDB file outside {sorted(FILE_CONNECT_ALLOWED)}"


def test_every_asset_gets_its_storage_from_the_home_resource_and_queues_for_the_warehouse():
    for asset in ASSETS:
        names = sorted(k.to_user_string() for k in asset.keys)
        assert "home" in asset.required_resource_keys, names
        # On the DuckDB file (the tests' default) every writer is in the one pool.
        assert asset.op.pool == "warehouse", names
