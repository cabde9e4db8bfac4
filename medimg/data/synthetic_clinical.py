"""Clinical covariates (CRP) and a binary outcome of the synthetic CT studies.

The outcome follows a known logistic model of lesion presence (seen in the image) and the
covariates CRP, age and sex (not in the image)::

    P(outcome = 1) = sigmoid(b0 + b1 * lesion + b2 * z(crp) + b3 * z(age) + b4 * male)

with ``z`` standardising by the *population* mean and standard deviation of the generating
distributions (so a case's outcome does not depend on the other cases). The coefficients were
chosen by simulation so that, with the true lesion presence as an oracle image model, the
AUROC is ~0.78 for the image alone, ~0.75 for a logistic regression on the covariates alone
and ~0.91 for both together: a study needs both sources.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# CRP (mg/L) ~ Gamma(shape 4, scale 3): mean 12, sd 6, right-skewed like a lab value.
CRP_SHAPE = 4.0
CRP_SCALE = 3.0
CRP_MEAN = CRP_SHAPE * CRP_SCALE
CRP_SD = math.sqrt(CRP_SHAPE) * CRP_SCALE
CRP_MISSING_FRACTION = 0.08
# Age is uniform on the integers 25..85 (drawn per patient by the generator).
AGE_RANGE = (25, 85)
AGE_MEAN = (AGE_RANGE[0] + AGE_RANGE[1]) / 2
AGE_SD = math.sqrt(((AGE_RANGE[1] - AGE_RANGE[0] + 1) ** 2 - 1) / 12)
# Non-zero tag ending the clinical stream's seed words, so the covariates and the outcome never
# consume the image generator's numbers (whose stream ends with another tag).
CLINICAL_STREAM = 0xC11


@dataclass(frozen=True)
class OutcomeModel:
    """Logistic-model coefficients of the outcome (see the module docstring)."""

    intercept: float = -2.25
    lesion: float = 4.0
    crp: float = 1.75
    age: float = 1.0
    male: float = 0.5

    def logit(
        self, lesion: np.ndarray, crp: np.ndarray, age: np.ndarray, male: np.ndarray
    ) -> np.ndarray:
        """Log-odds of ``outcome = 1`` (array inputs broadcast; ``crp`` must be complete)."""
        return (
            self.intercept
            + self.lesion * np.asarray(lesion, dtype=float)
            + self.crp * (np.asarray(crp, dtype=float) - CRP_MEAN) / CRP_SD
            + self.age * (np.asarray(age, dtype=float) - AGE_MEAN) / AGE_SD
            + self.male * np.asarray(male, dtype=float)
        )


OUTCOME_MODEL = OutcomeModel()


@dataclass(frozen=True)
class Clinical:
    """Clinical record of one study."""

    crp: float | None  # mg/L, None when not measured
    outcome: int


def clinical_rng(seed: int, site_index: int, patient_index: int, study_index: int):
    """The study's clinical random stream, independent of its image stream."""
    return np.random.default_rng([seed, site_index, patient_index, study_index, CLINICAL_STREAM])


def draw_clinical(
    rng: np.random.Generator,
    has_lesion: bool,
    age: int,
    sex: str,
    model: OutcomeModel = OUTCOME_MODEL,
) -> Clinical:
    """Draw one study's CRP, its missingness and the outcome.

    Args:
        rng: The study's clinical stream (see :func:`clinical_rng`).
        has_lesion: Whether the image shows a lesion.
        age: Age in years.
        sex: ``"M"`` or ``"F"``.
        model: The outcome model.

    Returns:
        The record; the outcome uses the true CRP even when it is reported missing.
    """
    crp = float(rng.gamma(CRP_SHAPE, CRP_SCALE))
    missing = bool(rng.random() < CRP_MISSING_FRACTION)
    probability = 1.0 / (1.0 + math.exp(-float(model.logit(has_lesion, crp, age, sex == "M"))))
    outcome = int(rng.random() < probability)
    return Clinical(crp=None if missing else round(crp, 1), outcome=outcome)
