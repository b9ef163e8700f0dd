"""The seven patient factors: one table of names, kinds, units, ranges and words.

Every place that names a factor reads it from here: the `factors` message
(`messages.FactorValues` takes its bounds from this table), the predictor's
feature vector and model card, the `amrwatch factors` options and their help,
the monitor's factor form, and the study's cohort CSV. A factor therefore
cannot mean one thing at the bedside and another in training.

The ranges are deliberately wide: they reject typing errors, not unusual
patients. An institution that needs other ranges changes them here and
retrains the model (`amrwatch train`); the model card records the ranges the
model was fitted with, and the predictor refuses a card whose features do not
match this table (services/predictor/model.py). The order of `FACTORS` is the
order of the model's input vector: never reorder it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["float", "int", "bool"]


@dataclass(frozen=True)
class Factor:
    """One factor. `min`/`max` keep the type the model card records (0.0 for a float, 1 for a grade)."""

    name: str
    kind: Kind
    unit: str
    """The unit as the model card records it ('Cohen grade', 'count', 'yes/no' …)."""
    min: float
    max: float
    label: str
    """What it is, in lower case ('disease duration'): model card, CLI help, error messages."""
    title: str
    """The label an operator reads on a form ('Disease duration')."""
    hint: str
    """One line of help on the form."""
    unit_shown: str
    """The unit next to the number on a form and in its error messages ('' for yes/no)."""
    step: float | None = None
    """The increment a form steps by (None for yes/no)."""
    levels: str = ""
    """What each grade means, for graded factors."""

    @property
    def option(self) -> str:
        """The command-line option: --duration-years."""
        return "--" + self.name.replace("_", "-")

    def range_text(self) -> str:
        """'0-60 years', '1-4 grade', 'yes/no'."""
        if self.kind == "bool":
            return "yes/no"
        return f"{self.min:g}-{self.max:g} {self.unit_shown}"

    def describe(self) -> str:
        """One line: what it is, its range and unit, and the meaning of its levels."""
        text = f"{self.label} ({self.range_text()})"
        return f"{text}: {self.levels}" if self.levels else text


#: The factors in the order of the model's input vector (and of every form and table).
FACTORS: tuple[Factor, ...] = (
    Factor("duration_years", "float", "years", 0.0, 60.0, "disease duration", "Disease duration",
           "years since the spasm began", "years", 0.1),
    Factor("cohen_grade", "int", "Cohen grade", 1, 4, "preoperative spasm severity", "Preoperative severity",
           "Cohen grade: 1 blinking on provocation, 2 mild, 3 moderate, 4 severe/disabling", "grade", 1,
           levels="1 more blinking on provocation, 2 mild twitching, 3 moderate and mildly disabling, "
           "4 severe and disabling"),
    Factor("carbamazepine", "bool", "yes/no", 0, 1, "carbamazepine use", "Carbamazepine use",
           "takes carbamazepine: yes or no", "", None),
    Factor("vessels", "int", "count", 1, 4, "responsible vessels", "Responsible vessels",
           "number of offending vessels", "vessels", 1),
    Factor("amr_amplitude_uv", "float", "µV", 0.0, 5000.0, "preoperative AMR amplitude",
           "Preoperative AMR amplitude", "normally measured by the analyzer from the baseline", "µV", 1),
    Factor("retraction_mm", "float", "mm", 0.0, 40.0, "cerebellar retraction depth", "Cerebellar retraction depth",
           "entered by the surgeon", "mm", 0.5),
    Factor("displacement", "int", "grade", 1, 3, "responsible-vessel displacement", "Vessel displacement",
           "1 slight, 2 moderate, 3 marked", "grade", 1, levels="1 slight, 2 moderate, 3 marked"),
)
FACTOR_NAMES: tuple[str, ...] = tuple(f.name for f in FACTORS)
BY_NAME: dict[str, Factor] = {f.name: f for f in FACTORS}
