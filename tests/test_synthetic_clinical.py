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

N = 20_000


@pytest.fixture(scope="module")
def cohort() -> dict[str, np.ndarray]:
    """A large simulated cohort: true lesion presence, covariates (NaN = missing), outcome."""
    rng = np.random.default_rng(123)
    lesion = rng.random(N) < 0.5
    age = rng.integers(AGE_RANGE[0], AGE_RANGE[1] + 1, N)
    male = rng.random(N) < 0.5
    records = [
        draw_clinical(rng, bool(les), int(a), "M" if m else "F")
        for les, a, m in zip(lesion, age, male, strict=True)
    ]
    crp = np.array([np.nan if r.crp is None else r.crp for r in records])
    outcome = np.array([r.outcome for r in records])
    return {"lesion": lesion, "age": age, "male": male, "crp": crp, "outcome": outcome}


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
    """Oracle image model (true lesion presence) vs covariates vs both, held-out AUROC."""
    outcome = cohort["outcome"]
    covariates = np.column_stack([cohort["crp"], cohort["age"], cohort["male"]])
    image = cohort["lesion"][:, None].astype(float)
    auroc_image = _held_out_auroc(image, outcome)
    auroc_covariates = _held_out_auroc(covariates, outcome)
    auroc_both = _held_out_auroc(np.column_stack([image, covariates]), outcome)
    # Each source alone carries signal; together they are clearly better than either alone.
    assert auroc_image > 0.6 and auroc_covariates > 0.6
    assert auroc_both > max(auroc_image, auroc_covariates) + 0.08
    # The design targets (module docstring): ~0.78 / ~0.75 / ~0.91.
    assert auroc_image == pytest.approx(0.78, abs=0.03)
    assert auroc_covariates == pytest.approx(0.745, abs=0.03)
    assert auroc_both == pytest.approx(0.915, abs=0.03)


def test_outcome_follows_the_documented_logistic_model(cohort: dict[str, np.ndarray]) -> None:
    """An unpenalised logistic regression on complete cases recovers the coefficients."""
    complete = ~np.isnan(cohort["crp"])
    features = np.column_stack(
        [cohort["lesion"], cohort["crp"], cohort["age"], cohort["male"]]
    ).astype(float)[complete]
    model = LogisticRegression(C=np.inf, max_iter=1000)
    model.fit(features, cohort["outcome"][complete])
    lesion, crp, age, male = model.coef_[0]
    # Standardised effects (per SD of CRP and age), as the model is written.
    np.testing.assert_allclose(
        [lesion, crp * np.std(features[:, 1]), age * np.std(features[:, 2]), male],
        [OUTCOME_MODEL.lesion, OUTCOME_MODEL.crp, OUTCOME_MODEL.age, OUTCOME_MODEL.male],
        atol=0.25,
    )
    assert min(lesion, crp, age, male) > 0  # every term raises the risk


def test_clinical_stream_is_deterministic_and_per_study() -> None:
    def draw(*ids: int) -> tuple[float | None, int]:
        record = draw_clinical(clinical_rng(*ids), True, 60, "F")
        return record.crp, record.outcome

    assert draw(0, 0, 1, 0) == draw(0, 0, 1, 0)
    crps = {draw(0, 0, 1, study)[0] for study in range(5)} | {draw(1, 0, 1, 0)[0]}
    assert len(crps) >= 5
