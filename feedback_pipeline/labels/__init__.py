"""The labels stage: label files and escalations → human_labels, label_quarantine,
label_agreement, judge_calibration.

Where things are: `assets.py` (the Dagster assets, thin), `importing.py` (one import, pure),
`storage.py` (warehouse reads/writes, old column names), `inbox.py` (which files are new),
`reading.py` + `text_files.py` + `label_studio_export.py` (file formats), `validation.py` +
`conflicts.py` (the rules), `history.py` (duplicates, supersede), `identity.py` (label_id),
`escalations.py`, `current.py`, `agreement.py`, `annotator_stats.py`, `gold.py`,
`adjudication.py`, `calibration.py`, `schemas.py` (the tables) and `shapes.py` (frames between steps).
"""
