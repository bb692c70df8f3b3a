"""The weekly impact report: one self-contained HTML file plus the PNGs it embeds.

Pure rendering over Polars frames (no Dagster, no warehouse), nothing fetched from outside;
statistics are computed elsewhere in the stage, this package only shows them. `page`
(`write_report`: the file layout and the sections), `tables` (the HTML tables), `figures`
(matplotlib on the Agg canvas; imported only when a report is drawn), `cells` (formatting
shared by both).
"""

from feedback_pipeline.impact.weekly_report.page import write_report

__all__ = ["write_report"]
