"""Clinical covariates (CRP) and a binary outcome of the synthetic CT studies.

The outcome follows a known logistic model of the lesion burden (seen in the image) and the
covariates CRP, age and sex (not in the image)::

    P(outcome = 1) = sigmoid(b0 + b1 * burden + b2 * z(crp) + b3 * z(age) + b4 * male)
    burden = V / (V + V_half)    (V: lesion volume in mL, 0 without a lesion)

with ``z`` standardising by the *population* mean and standard deviation of the generating
distributions (so a case's outcome does not depend on the other cases). The burden saturates:
a large lesion raises the risk a lot, a small one (which a scanner may barely show) a little.
The coefficients were chosen by simulation (tests/test_synthetic_clinical.py checks them) so
that, with the true burden as an oracle image model, the held-out AUROC is ~0.84 for the image
alone, ~0.785 for a logistic regression on the covariates alone and ~0.98 for both together: a
study needs both sources, and a model using both can reach AUROC >= 0.90.
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

    intercept: float = -7.0
    burden: float = 15.0
    burden_half_ml: float = 10.0  # lesion volume (mL) at which the burden is 0.5
    crp: float = 5.0
    age: float = 2.5
    male: float = 1.0

    def burden_of(self, lesion_volume_ml: np.ndarray) -> np.ndarray:
        """Saturating lesion burden in [0, 1) from the lesion volume (0 mL: no lesion)."""
        volume = np.asarray(lesion_volume_ml, dtype=float)
        return volume / (volume + self.burden_half_ml)

    def logit(
        self, lesion_volume_ml: np.ndarray, crp: np.ndarray, age: np.ndarray, male: np.ndarray
    ) -> np.ndarray:
        """Log-odds of ``outcome = 1`` (array inputs broadcast; ``crp`` must be complete)."""
        return (
            self.intercept
            + self.burden * self.burden_of(lesion_volume_ml)
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
    lesion_volume_ml: float,
    age: int,
    sex: str,
    model: OutcomeModel = OUTCOME_MODEL,
) -> Clinical:
    """Draw one study's CRP, its missingness and the outcome.

    Args:
        rng: The study's clinical stream (see :func:`clinical_rng`).
        lesion_volume_ml: Volume of the image's lesion in mL (0 without a lesion).
        age: Age in years.
        sex: ``"M"`` or ``"F"``.
        model: The outcome model.

    Returns:
        The record; the outcome uses the true CRP even when it is reported missing.
    """
    crp = float(rng.gamma(CRP_SHAPE, CRP_SCALE))
    missing = bool(rng.random() < CRP_MISSING_FRACTION)
    probability = 1.0 / (
        1.0 + math.exp(-float(model.logit(lesion_volume_ml, crp, age, sex == "M")))
    )
    outcome = int(rng.random() < probability)
    return Clinical(crp=None if missing else round(crp, 1), outcome=outcome)
