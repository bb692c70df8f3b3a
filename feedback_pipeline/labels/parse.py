"""The label import's public functions, gathered where callers have imported them from.

Kept so `from feedback_pipeline.labels.parse import ...` keeps working (tests of other
stages use it); the code lives in the modules named after each concern: `reading`
(files), `validation` and `conflicts` (rules), `history` (merge, supersede),
`escalations`, `identity` (label_id), `shapes` (frame shapes).
"""

from feedback_pipeline.labels.escalations import ESCALATION_CATEGORY, escalation_labels
from feedback_pipeline.labels.history import merge_labels
from feedback_pipeline.labels.identity import with_label_id
from feedback_pipeline.labels.reading import read_label_file
from feedback_pipeline.labels.shapes import (
    CANDIDATE_COLUMNS, HUMAN_LABEL_COLUMNS, LABEL_COLUMNS, QUARANTINE_COLUMNS,
)
from feedback_pipeline.labels.validation import validate_labels

__all__ = [
    "CANDIDATE_COLUMNS", "ESCALATION_CATEGORY", "HUMAN_LABEL_COLUMNS", "LABEL_COLUMNS",
    "QUARANTINE_COLUMNS", "escalation_labels", "merge_labels", "read_label_file",
    "validate_labels", "with_label_id",
]
