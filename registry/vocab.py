"""The registry's fixed vocabularies (timepoints, outcome classes, complications, statuses).

Kept apart from store.py so that building the command line (`registry/cli.py`
offers them as choices) does not import SQLAlchemy: every `amrwatch` command
builds the whole parser, and `amrwatch analyze` / `verify` never touch the
registry (0.25 s of a 2-hour session's re-analysis, issue #18). store.py
re-exports every name, so callers keep importing them from there.
"""

from __future__ import annotations

REGISTRY_FILE = "registry.sqlite"

STATUSES = ("recording", "closed", "corrupt")
TIMEPOINTS = ("1w", "3m", "6m", "1y")
#: Follow-up points at which a postoperative AMR recording may be linked to the operation (1m: the 1-month
#: recording that predicted the 1-year outcome in the 2022 prospective study, issue #17).
RECORDING_TIMEPOINTS = ("1w", "1m", "3m", "6m", "1y")
#: Who ended a presence interval: the reader ('left'), the end of the session, or the cart no longer hearing
#: the reader ('link_lost': its view was not live from then until a later interval opens).
PRESENCE_CLOSED_BY = ("reader", "session_end", "link_lost")
OUTCOME_CLASSES = ("cured", "improved", "unchanged", "worse")
#: Complications an outcome may record (docs/domain.md); stored as {name: true}.
COMPLICATIONS = ("facial_palsy_immediate", "facial_palsy_delayed", "hearing_loss", "csf_leak")
