"""Tests for the synthetic clinical covariates and outcome: both image and covariates carry signal."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medimg.data.synthetic_clinical import (
    AGE_RANGE,
    CRP_MISSING_FRACTION,
    OUTCOME_MODEL,
    clinical_rng,
    draw_clinical,
)
from medimg.data.synthetic_phantom import LESION_RADIUS

N = 20_000


@pytest.fixture(scope="module")
def cohort() -> dict[str, np.ndarray]:
    """A large simulated cohort: true lesion volume, covariates (NaN = missing), outcome."""
    rng = np.random.default_rng(123)
    # Half the studies have a lesion, its radius drawn like the generator's (synthetic_phantom).
    radius = rng.uniform(*LESION_RADIUS, N)
    volume = np.where(rng.random(N) < 0.5, 4.0 / 3.0 * np.pi * radius**3 / 1000.0, 0.0)
    age = rng.integers(AGE_RANGE[0], AGE_RANGE[1] + 1, N)
    male = rng.random(N) < 0.5
    records = [
        draw_clinical(rng, float(v), int(a), "M" if m else "F")
        for v, a, m in zip(volume, age, male, strict=True)
    ]
    crp = np.array([np.nan if r.crp is None else r.crp for r in records])
    outcome = np.array([r.outcome for r in records])
    return {"volume": volume, "age": age, "male": male, "crp": crp, "outcome": outcome}


def _held_out_auroc(features: np.ndarray, outcome: np.ndarray) -> float:
    """AUROC on the second half of a logistic regression fitted on the first half."""
    half = len(outcome) // 2
    model = make_pipeline(SimpleImputer(strategy="mean"), StandardScaler(), LogisticRegression())
    model.fit(features[:half], outcome[:half])
    return float(roc_auc_score(outcome[half:], model.predict_proba(features[half:])[:, 1]))


def test_crp_is_skewed_and_sometimes_missing(cohort: dict[str, np.ndarray]) -> None:
    crp = cohort["crp"]
    missing = np.isnan(crp).mean()
    # Binomial standard deviation at N = 20000 is ~0.002.
    assert abs(missing - CRP_MISSING_FRACTION) < 0.01
    values = crp[~np.isnan(crp)]
    assert values.min() >= 0.0
    assert np.mean(values) > np.median(values)  # right-skewed, like a lab value


def test_outcome_needs_image_and_covariates(cohort: dict[str, np.ndarray]) -> None:
    """Oracle image model (true lesion burden) vs covariates vs both, held-out AUROC."""
    outcome = cohort["outcome"]
    covariates = np.column_stack([cohort["crp"], cohort["age"], cohort["male"]])
    image = OUTCOME_MODEL.burden_of(cohort["volume"])[:, None]
    auroc_image = _held_out_auroc(image, outcome)
    auroc_covariates = _held_out_auroc(covariates, outcome)
    auroc_both = _held_out_auroc(np.column_stack([image, covariates]), outcome)
    # Each source alone carries signal; together they are clearly better than either alone.
    assert auroc_image > 0.6 and auroc_covariates > 0.6
    assert auroc_both > max(auroc_image, auroc_covariates) + 0.08
    # The design targets (module docstring): ~0.84 / ~0.785 / ~0.98.
    assert auroc_image == pytest.approx(0.84, abs=0.03)
    assert auroc_covariates == pytest.approx(0.785, abs=0.03)
    assert auroc_both == pytest.approx(0.98, abs=0.015)


def test_outcome_follows_the_documented_logistic_model(cohort: dict[str, np.ndarray]) -> None:
    """An unpenalised logistic regression on complete cases recovers the coefficients."""
    complete = ~np.isnan(cohort["crp"])
    burden = OUTCOME_MODEL.burden_of(cohort["volume"])
    features = np.column_stack([burden, cohort["crp"], cohort["age"], cohort["male"]])[complete]
    model = LogisticRegression(C=np.inf, max_iter=1000)
    model.fit(features, cohort["outcome"][complete])
    burden_coef, crp, age, male = model.coef_[0]
    # Standardised effects (per SD of CRP and age), as the model is written.
    np.testing.assert_allclose(
        [burden_coef, crp * np.std(features[:, 1]), age * np.std(features[:, 2]), male],
        [OUTCOME_MODEL.burden, OUTCOME_MODEL.crp, OUTCOME_MODEL.age, OUTCOME_MODEL.male],
        rtol=0.05,
        atol=0.2,
    )
    assert min(burden_coef, crp, age, male) > 0  # every term raises the risk


def test_clinical_stream_is_deterministic_and_per_study() -> None:
    def draw(*ids: int) -> tuple[float | None, int]:
        record = draw_clinical(clinical_rng(*ids), 20.0, 60, "F")
        return record.crp, record.outcome

    assert draw(0, 0, 1, 0) == draw(0, 0, 1, 0)
    crps = {draw(0, 0, 1, study)[0] for study in range(5)} | {draw(1, 0, 1, 0)[0]}
    assert len(crps) >= 5
