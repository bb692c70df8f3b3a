"""Label Studio's format, shared by the stages that write tasks and read annotations back:
the labeling config built from a rubric, queue rows as importable tasks, and the control
names an export carries in `result[].from_name`.

Format only: writing export files belongs to the sampling stage, reading exports back
to the labels stage; no HTTP here.
"""

from collections.abc import Sequence
from xml.sax.saxutils import quoteattr

import polars as pl

from feedback_pipeline.rubrics import RUBRIC_ID

VERDICTS: tuple[str, ...] = ("pass", "fail")

# Control-tag names: they appear as `from_name` in every Label Studio export.
VERDICT_CONTROL = "verdict"
CATEGORY_CONTROL = "failure_category"
NOTES_CONTROL = "notes"

# Queue columns copied into each task's `data` (the text the annotator reads first).
TASK_DATA_COLUMNS: tuple[str, ...] = (
    "trace_id", "week", "agent_id", "stratum", "inclusion_prob", "queue_position",
    "user_message", "context", "agent_response",
)


def label_config_xml(categories: Sequence[str]) -> str:
    """The labeling config: the conversation, a required pass/fail, the category on fail, notes."""
    category_choices = "\n".join(
        f"    <Choice value={quoteattr(c)}/>" for c in categories
    )
    return f"""<View>
  <Header value="User message"/>
  <Text name="user_message" value="$user_message"/>
  <Header value="Conversation context"/>
  <Text name="context" value="$context"/>
  <Header value="Agent response"/>
  <Text name="agent_response" value="$agent_response"/>
  <Header value="Verdict"/>
  <Choices name="{VERDICT_CONTROL}" toName="agent_response" choice="single-radio" showInline="true" required="true" requiredMessage="Pick pass or fail">
    <Choice value="pass"/>
    <Choice value="fail"/>
  </Choices>
  <View visibleWhen="choice-selected" whenTagName="{VERDICT_CONTROL}" whenChoiceValue="fail">
    <Header value="Failure category (required when the verdict is fail)"/>
    <Choices name="{CATEGORY_CONTROL}" toName="agent_response" choice="single-radio">
{category_choices}
    </Choices>
  </View>
  <Header value="Notes (optional)"/>
  <TextArea name="{NOTES_CONTROL}" toName="agent_response" rows="3" maxSubmissions="1" editable="true"/>
</View>
"""



def queue_to_label_studio_tasks(
    queue: pl.DataFrame, rubric_version: str, *, label_source: str = "annotation",
) -> list[dict]:
    """One Label Studio task per queue row, in queue order, importable as-is.

    `data` carries the queue columns plus rubric_id, rubric_version and label_source
    (`annotation`, or `adjudication` for tasks built from the adjudication list), which
    come back in the export and tell the importer what the labels are.

    Every value in `data` is JSON-native: dates become ISO strings, a non-text
    `context` (list/struct) becomes its JSON text, and missing text becomes "" so
    that the `$context`-style references in the config always resolve.
    """
    missing = [c for c in TASK_DATA_COLUMNS if c not in queue.columns]
    if missing:
        raise ValueError(f"queue lacks column(s) {missing}; expected {list(TASK_DATA_COLUMNS)}")
    text_cols = ("user_message", "context", "agent_response")
    context = pl.col("context")
    if queue.schema["context"] != pl.String:
        # The value's own JSON text: encode {"c": value}, then strip the wrapper.
        context = pl.when(pl.col("context").is_not_null()).then(
            pl.struct(pl.col("context").alias("c")).struct.json_encode()
            .str.strip_prefix('{"c":').str.strip_suffix("}"))
    data = (
        queue.sort("week", "agent_id", "queue_position", maintain_order=True)
        .select(
            pl.col("trace_id"),
            pl.col("week").cast(pl.String),
            pl.col("agent_id", "stratum", "inclusion_prob", "queue_position"),
            pl.col("user_message"),
            context.alias("context"),
            pl.col("agent_response"),
            pl.lit(rubric_version).alias("rubric_version"),
            pl.lit(RUBRIC_ID).alias("rubric_id"),
            pl.lit(label_source).alias("label_source"),
        )
        .with_columns(pl.col(text_cols).cast(pl.String).fill_null(""))
    )
    return [{"data": row} for row in data.to_dicts()]
