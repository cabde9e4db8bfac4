"""From a config's data source to a split, preflight-checked datamodule."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from medimg.data import keys
from medimg.data.datamodule import ManifestDataModule
from medimg.data.leakage import check_leakage, sets_by_split
from medimg.data.manifest import load_manifest
from medimg.data.preflight import check_cases
from medimg.data.sources import write_manifest
from medimg.data.splits import kfold_by_patient, split_by_patient
from medimg.data.targets import CovariateCoding, StudyColumns, strata
from medimg.pipeline.build import build_augmentation, build_preprocessor, task_kind

log = logging.getLogger(__name__)


def resolve_sources(cfg: DictConfig) -> tuple[Path, dict[str, Path]]:
    """Internal manifest path and external manifest paths by name, from ``cfg.data.source``.

    A source may give a manifest path or a manifest table (e.g. built from an MSD
    ``dataset.json``); tables are written into the run folder's ``manifests/`` first, so the
    run records exactly which cases it used.
    """
    sources = instantiate(cfg.data.source, _convert_="all")
    external = sources.get("external") or {}
    if isinstance(external, (str, Path, pd.DataFrame)):
        external = {"external": external}
    manifests = Path(cfg.paths.output_dir) / "manifests"
    internal = _as_path(sources["internal"], manifests / "internal.csv")
    return internal, {str(k): _as_path(v, manifests / f"{k}.csv") for k, v in external.items()}


def _as_path(source: object, target: Path) -> Path:
    """A manifest path as it is, or a manifest table written to ``target``."""
    if isinstance(source, pd.DataFrame):
        return write_manifest(source, target)
    return Path(source)


def study_columns(cfg: DictConfig) -> StudyColumns:
    """The study's target, mask and covariate columns, from ``cfg.data``."""
    label = cfg.data.get("label_column", "label")
    return StudyColumns(
        label=label if isinstance(label, str) else list(label),
        mask=cfg.data.get("mask_column", "mask"),
        covariates=list(cfg.data.get("covariates") or []),
    )


def attach_covariates(
    frames: dict[str, pd.DataFrame], coding: CovariateCoding, sources: dict[str, Path]
) -> None:
    """Add a ``covariates`` column (one float vector per case, NaN = missing) to each frame."""
    for name, frame in frames.items():
        matrix = coding.transform(frame, sources[name])
        frame[keys.COVARIATES] = list(matrix)


def build_datamodule(cfg: DictConfig) -> tuple[ManifestDataModule, pd.DataFrame]:
    """Read and preflight every manifest, split the internal one by patient, build the module.

    Returns:
        The datamodule and the internal manifest with its ``split`` column.
    """
    kind = task_kind(cfg)
    columns = study_columns(cfg)
    internal_path, external_paths = resolve_sources(cfg)
    internal = load_manifest(internal_path, kind, columns)
    external = {name: load_manifest(path, kind, columns) for name, path in external_paths.items()}
    for path, frame in [
        (internal_path, internal),
        *((external_paths[n], f) for n, f in external.items()),
    ]:
        check_cases(
            frame, path, kind, workers=cfg.data.prepare_workers, repair_tilt=cfg.data.repair_tilt
        )
    stratum = strata(internal, kind, columns.multilabel)
    stratify = None
    if stratum is not None:
        internal = internal.assign(stratum=stratum)
        stratify = "stratum"
    split = split_by_patient(
        internal,
        val_fraction=cfg.data.val_fraction,
        test_fraction=cfg.data.test_fraction,
        seed=cfg.seed,
        stratify=stratify,
    )
    if cfg.data.fold is not None:
        split = _cross_validation_fold(split, cfg.data.fold, cfg.data.n_folds, cfg.seed, stratify)
    # No patient, study or identical image may sit in two of train/val/test/external.
    check_leakage({**sets_by_split(split), **external}, content_hash=cfg.data.check_content_leakage)
    if columns.covariates:
        coding = CovariateCoding.fit(
            split[split["split"] == "train"], columns.covariates, internal_path
        )
        attach_covariates(
            {"internal": split, **external}, coding, {"internal": internal_path, **external_paths}
        )
    counts = split["split"].value_counts().to_dict()
    log.info(
        "split by patient (seed %d): %s; external sets: %s",
        cfg.seed,
        counts,
        {k: len(v) for k, v in external.items()},
    )
    datamodule = ManifestDataModule(
        split,
        external,
        task=kind,
        preprocessor=build_preprocessor(cfg),
        augmentation=build_augmentation(cfg),
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        cache=cfg.data.cache,
        cache_dir=cfg.data.cache_dir,
        cache_context={"preprocess": OmegaConf.to_container(cfg.preprocess, resolve=True)},
        prepare_workers=cfg.data.prepare_workers,
        repair_tilt=cfg.data.repair_tilt,
        seed=cfg.seed,
        balanced_sampling=cfg.data.balanced_sampling,
        spatial_dims=len(cfg.preprocess.size),
    )
    return datamodule, split


def _cross_validation_fold(
    split: pd.DataFrame, fold: int, n_folds: int, seed: int, stratify: str | None
) -> pd.DataFrame:
    """Keep the test patients; make fold ``fold`` of a patient k-fold of the rest the val split."""
    if not 0 <= fold < n_folds:
        raise ValueError(f"data.fold must be in [0, data.n_folds={n_folds}), got {fold}")
    rest = split[split["split"] != "test"]
    folds = kfold_by_patient(rest, n_folds=n_folds, seed=seed, stratify=stratify)
    out = split.copy()
    out["fold"] = pd.NA
    out.loc[rest.index, "fold"] = folds["fold"]
    out.loc[rest.index, "split"] = ["val" if f == fold else "train" for f in folds["fold"]]
    return out


AGE_BANDS = [0, 40, 60, 200]
AGE_LABELS = ["<40", "40-59", ">=60"]


def data_summary(frame: pd.DataFrame) -> dict:
    """Counts per split, site, sex and age band (no identifiers), for the model card."""
    summary: dict = {"cases": int(len(frame)), "patients": int(frame[keys.PATIENT_ID].nunique())}
    labels = frame[keys.LABEL] if keys.LABEL in frame else pd.Series(dtype=float)
    if len(labels) and isinstance(labels.iloc[0], list):
        summary["positives_per_label"] = [int(v) for v in pd.DataFrame(labels.tolist()).sum()]
    elif len(labels) and set(pd.unique(labels)) <= {0, 1}:
        summary["positives"] = int((labels > 0).sum())
    for column in ("site", "sex", "manufacturer"):
        if column in frame:
            summary[column] = {str(k): int(v) for k, v in frame[column].value_counts().items()}
    if "age" in frame:
        bands = pd.cut(frame["age"], AGE_BANDS, right=False, labels=AGE_LABELS)
        summary["age_band"] = {str(k): int(v) for k, v in bands.value_counts().sort_index().items()}
    return summary
