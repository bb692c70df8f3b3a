"""feedback_pipeline: LLM agent traces and feedback -> scores, an honest annotation
queue, labels, immutable eval sets and impact figures (Dagster + DuckDB + Polars)."""

import warnings

# Weekly schema checks are partitioned asset checks, a Dagster "preview" feature we use
# on purpose (a check per week is what a data engineer reads); say so once, not per import.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec")


def _import_pandera_without_pandas() -> None:
    """Import pandera as a polars-only install sees it: `import pandera` imports pandas
    (~0.3 s, a fifth of loading the definitions, paid by every run and sensor process)
    only to expose its pandas API, which this project never uses. Pandera supports
    installs without pandas (its `__init__` falls back when `import pandas` raises
    "No module named 'pandas'"), so pandas is hidden for that one import; it stays
    importable afterwards (statsmodels loads it inside the functions that need it)."""
    import importlib.abc
    import sys

    if "pandera" in sys.modules or "pandas" in sys.modules:
        return

    class _HidePandas(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "pandas" or name.startswith("pandas."):
                raise ModuleNotFoundError("No module named 'pandas'", name=name)
            return None

    finder = _HidePandas()
    sys.meta_path.insert(0, finder)
    try:
        import pandera  # noqa: F401
    finally:
        sys.meta_path.remove(finder)


_import_pandera_without_pandas()
