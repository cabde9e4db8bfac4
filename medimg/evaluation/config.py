"""Settings of an evaluation (plain dataclass: the pipeline fills it from the Hydra config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from medimg.evaluation.classification import THRESHOLD_METHODS

DEFAULT_ATTRIBUTES = ("sex", "age_band", "site", "manufacturer")


@dataclass
class EvaluationConfig:
    """How sets are evaluated.

    Attributes:
        n_resamples: patient-level bootstrap resamples per interval.
        seed: bootstrap seed (each set and subgroup derives its own stream from it and its name).
        level: confidence level of every interval.
        threshold_method: ``youden`` or ``sensitivity`` (operating point chosen on validation).
        target_sensitivity: the target for ``threshold_method="sensitivity"``.
        attributes: manifest columns to analyse by subgroup; ``age_band`` is derived from ``age``.
        age_bands: lower edges of the age bands after the first (``(40, 60)``: <40, 40-59, ≥60).
        min_cases: a subgroup with fewer cases is flagged "too small to say".
        min_positives: a (classification) subgroup with fewer positives is flagged too.
        ece_bins: equal-width bins of the expected calibration error.
        nsd_tolerance_mm: surface-Dice tolerance (segmentation).
        internal: name of the internal set the others are compared with.
        classes: class names (multi-class, multi-label, segmentation foreground); default 0, 1, …
    """

    n_resamples: int = 1000
    seed: int = 0
    level: float = 0.95
    threshold_method: str = "youden"
    target_sensitivity: float = 0.9
    attributes: tuple[str, ...] = DEFAULT_ATTRIBUTES
    age_bands: tuple[int, ...] = (40, 60)
    min_cases: int = 30
    min_positives: int = 10
    ece_bins: int = 10
    nsd_tolerance_mm: float = 2.0
    internal: str = "test"
    classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.n_resamples < 10:
            raise ValueError(f"evaluation.n_resamples must be at least 10, got {self.n_resamples}")
        if not 0 < self.level < 1:
            raise ValueError(f"evaluation.level must be in (0, 1), got {self.level}")
        if self.threshold_method not in THRESHOLD_METHODS:
            raise ValueError(
                f"evaluation.threshold_method must be one of {THRESHOLD_METHODS}, "
                f"got {self.threshold_method!r}"
            )
        if not 0 < self.target_sensitivity <= 1:
            raise ValueError(
                f"evaluation.target_sensitivity must be in (0, 1], got {self.target_sensitivity}"
            )
        if list(self.age_bands) != sorted(self.age_bands):
            raise ValueError(f"evaluation.age_bands must be increasing, got {self.age_bands}")
        self.attributes = tuple(self.attributes)
        self.age_bands = tuple(self.age_bands)
