"""Queue exports an annotator opens: CSV, JSONL, Label Studio tasks and its labeling config."""

import json
from pathlib import Path

import polars as pl

from feedback_pipeline.files import atomic_write
from feedback_pipeline.label_studio import label_config_xml, queue_to_label_studio_tasks


def export_queue(queue: pl.DataFrame, folder: Path, rubric_version: str, categories) -> dict[str, str]:
    """Write the week's queue to `folder` (replacing it): returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    ordered = queue.sort("agent_id", "queue_position")
    flat = ordered.with_columns(pl.col("week").cast(pl.String))
    paths = {
        "csv": folder / "queue.csv",
        "jsonl": folder / "queue.jsonl",
        "label_studio_tasks": folder / "label_studio_tasks.json",
        "label_studio_config": folder / "label_studio_config.xml",
    }
    atomic_write(paths["csv"], flat.write_csv().encode())
    atomic_write(paths["jsonl"], flat.write_ndjson().encode())
    tasks = queue_to_label_studio_tasks(ordered, rubric_version)
    atomic_write(paths["label_studio_tasks"], json.dumps(tasks, ensure_ascii=False, indent=1).encode())
    atomic_write(paths["label_studio_config"], label_config_xml(categories).encode())
    return {k: str(v) for k, v in paths.items()}
