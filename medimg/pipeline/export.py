"""The export stage: package the best model with its preprocessing and prove it matches."""

from __future__ import annotations

import json
import logging
import tempfile
from importlib import metadata
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from medimg.data import keys
from medimg.data.datamodule import ManifestDataModule
from medimg.data.errors import DataError
from medimg.data.loading import load_transform, raw_volume
from medimg.export import FORMATS, prepare_export, weights_sha256, write_sidecar
from medimg.export.card import (
    CARD_FORMAT,
    DEFAULT_INTENDED_USE,
    input_contract,
    observed_inputs,
    operating_point,
    output_contract,
    validation_section,
)
from medimg.export.codes import label_entries
from medimg.export.diagnostic import DiagnosticModel, WithCovariates
from medimg.export.parity import check_parity, expected_outputs, parity_passed
from medimg.export.predictor import diagnostic_from_task
from medimg.files import write_json
from medimg.pipeline import provenance
from medimg.pipeline.build import task_kind
from medimg.tasks.base import BaseTask

log = logging.getLogger(__name__)
FORMAT_PACKAGES = {"onnx": ("onnx", "onnxruntime", "onnxscript")}
__all__ = ["CARD_FORMAT", "ExportError", "export_run", "model_card", "weights_sha256"]


class ExportError(RuntimeError):
    """The exported model does not reproduce the checkpoint."""


def export_format(cfg: DictConfig) -> str:
    """``export.format`` (TorchScript when unset), checked."""
    fmt = str(cfg.export.get("format") or "torchscript")
    if fmt not in FORMATS:
        raise ValueError(f"export.format must be one of {sorted(FORMATS)}, got {fmt!r}")
    return fmt


def raw_inputs(
    datamodule: ManifestDataModule, name: str, case_ids: list[str] | None = None
) -> dict[str, list]:
    """Raw cases of set ``name`` (those of ``case_ids``, in that order, when given):
    ``volumes`` (native geometry), ``affines``, reader ``metas`` and ``covariates`` (None per
    case when the manifest has none)."""
    reader = load_transform(with_mask=False, repair_tilt=datamodule.repair_tilt)
    out: dict[str, list] = {"volumes": [], "affines": [], "metas": [], "covariates": []}
    records = datamodule.records(name)
    if case_ids is not None:
        by_id = {str(r[keys.CASE_ID]): r for r in records}
        records = [by_id[str(c)] for c in case_ids]
    for record in records:
        image = reader({"image": record["image"]})["image"]
        volume, affine = raw_volume(image)
        out["volumes"].append(volume)
        out["affines"].append(affine)
        out["metas"].append(
            {k: v for k, v in image.meta.items() if isinstance(v, (str, int, float))}
        )
        out["covariates"].append(record.get(keys.COVARIATES))
    return out


def case_outputs(outputs: list[dict], key: str = "prob") -> list[torch.Tensor]:
    """Per-case output tensors (``prob`` or ``pred``) from ``predict_step`` batches, in order."""
    return [batch[key][index] for batch in outputs for index in range(len(batch["case_id"]))]


def _software(fmt: str) -> dict:
    """Software versions of the run plus the packages the export format needs."""
    versions = provenance.software_versions()
    for name in FORMAT_PACKAGES.get(fmt, ()):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def model_card(
    cfg: DictConfig,
    task: BaseTask,
    metrics: dict,
    extra: dict,
    observed: dict | None = None,
    model: DiagnosticModel | None = None,
) -> dict:
    """Everything an integrator needs to know about the exported model (no identifiers).

    Args:
        cfg: the run's config.
        task: the task whose network is exported.
        metrics: the evaluation's results by set name (copied as they are: CIs, subgroups).
        extra: further sections from the pipeline (``training_data``, ``internal_test_data``,
            ``evaluation_report``, ``operating_point``...), merged at the top level.
        observed: what the validation inputs looked like (:func:`observed_inputs`).
        model: the exported unit; its network's weights are hashed (default: ``task.net``).
    """
    kind = task_kind(cfg)
    fmt = export_format(cfg)
    preprocessing = OmegaConf.to_container(cfg.preprocess, resolve=True)
    label_names = list(getattr(task, "label_names", []))
    codes = cfg.export.get("label_codes")
    codes = OmegaConf.to_container(codes, resolve=True) if codes is not None else None
    extra = dict(extra)
    contract = input_contract(observed or {}, preprocessing)
    if getattr(task.net, "takes_covariates", False):
        contract["covariates"] = [str(c) for c in cfg.data.get("covariates") or []]
        contract["covariates_format"] = "float32 (D,) raw values in this order, NaN = missing"
    return {
        "format": CARD_FORMAT,
        "experiment": cfg.experiment_name,
        "intended_use": cfg.export.get("intended_use") or DEFAULT_INTENDED_USE,
        "task": kind,
        "num_classes": int(cfg.task.num_classes),
        "label_names": label_names,
        "labels": label_entries(label_names, codes),
        "input": contract,
        "multilabel": bool(getattr(task, "multilabel", False)),
        "output": output_contract(
            kind, int(cfg.task.num_classes), bool(getattr(task, "multilabel", False))
        ),
        "network": str(cfg.net.get("_target_", "")),
        "network_input_shape": [1, 1, *preprocessing["size"]],
        "preprocessing": preprocessing,
        "validation": validation_section(metrics),
        "metrics": metrics,
        "operating_point": operating_point(
            kind, cfg.export.get("operating_point"), extra.pop("operating_point", None)
        ),
        **extra,
        "software": _software(fmt),
        "code_version": provenance.code_version(),
        "config_sha256": provenance.config_hash(cfg),
        "weights_sha256": weights_sha256(model.net if model is not None else task.net),
    }


def export_run(
    cfg: DictConfig,
    task: BaseTask,
    datamodule: ManifestDataModule,
    test_outputs: list[dict],
    metrics: dict,
    card_extra: dict,
    run_dir: Path,
    export_dir: Path | None = None,
) -> Path:
    """Write ``export/model.<ts|pt2|onnx>`` and ``export/model_card.json`` after a parity check.

    The exported model is run on the raw test cases in a torch-only subprocess and must
    reproduce the framework's evaluation outputs within ``export.parity_atol`` (and, for
    segmentation, label maps with Dice >= ``export.parity_min_dice`` on the input grid).

    Raises:
        ExportError: when it does not.
    """
    export_dir = Path(export_dir) if export_dir else run_dir / "export"
    export_dir.mkdir(parents=True, exist_ok=True)
    kind, fmt = task_kind(cfg), export_format(cfg)
    task = task.eval().cpu()
    model, gaps = diagnostic_from_task(task, datamodule.preprocessor)
    # The cases the framework predicted (all of the test split, or fewer under fast_dev_run).
    case_ids = [str(c) for batch in test_outputs for c in batch[keys.CASE_ID]]
    raw = raw_inputs(datamodule, "test", case_ids)
    volumes, affines = raw["volumes"], raw["affines"]
    if not volumes:
        raise ExportError("the test split is empty: nothing to check the exported model on")
    covariates = raw["covariates"] if isinstance(model.net, WithCovariates) else None
    probs = case_outputs(test_outputs, getattr(task, "output_key", "prob"))
    expected = expected_outputs(model, probs, volumes, affines)
    observed = observed_inputs(raw["metas"], [a.numpy() for a in affines])
    card = model_card(cfg, task, metrics, card_extra, observed, model)
    card["export"] = {"gaps": list(gaps)}
    example = (volumes[0], affines[0]) + ((covariates[0],) if covariates else ())
    prepared = prepare_export(model, fmt, example)
    prepared.facts["gaps"] = list(gaps) + list(prepared.facts.get("gaps", []))
    cases = _checkable(prepared.facts.get("input_shape"), volumes)
    name = f"model{FORMATS[fmt]}"
    with tempfile.TemporaryDirectory(dir=export_dir, prefix=".parity-") as scratch:
        candidate, _ = prepared.save(Path(scratch) / name, card)
        parity = check_parity(
            candidate,
            [volumes[i] for i in cases],
            [affines[i] for i in cases],
            [expected[i] for i in cases],
            [covariates[i] for i in cases] if covariates else None,
        )
    atol = float(cfg.export.parity_atol)
    min_dice = float(cfg.export.get("parity_min_dice", 0.99))
    parity.update(
        atol=atol,
        required_dice=min_dice if kind == "segmentation" else None,
        cases_not_checked_other_shape=len(volumes) - len(cases),
        passed=parity_passed(parity, atol, min_dice),
    )
    card["parity"] = parity
    if not parity["passed"]:
        write_json(export_dir / "model_card.json", card)
        raise ExportError(
            f"exported model differs from the checkpoint on the test split: max abs difference "
            f"{parity['max_abs_diff']:.3g} (limit {atol}), min Dice {parity['min_dice']:.4f} "
            f"(limit {min_dice}) (see {export_dir / 'model_card.json'})"
        )
    path, embedded = prepared.save(export_dir / name, card)
    write_sidecar(path, embedded)
    log.info(
        "exported %s (%s; parity on %d test cases: max abs diff %.2e, min Dice %.4f)",
        path,
        fmt,
        parity["n_cases"],
        parity["max_abs_diff"],
        parity["min_dice"],
    )
    return path


def _checkable(shape: list[int] | None, volumes: list[torch.Tensor]) -> list[int]:
    """Indices of the cases a fixed-shape export accepts (all when the shape is free)."""
    if shape is None:
        return list(range(len(volumes)))
    return [i for i, v in enumerate(volumes) if list(v.shape) == list(shape)]


def export_from_run(
    run_dir: str | Path,
    fmt: str | None = None,
    checkpoint: str = "best",
    output_dir: str | Path | None = None,
) -> Path:
    """Export a finished run's checkpoint again (e.g. in another format), with parity.

    The run's own config rebuilds the data split, the network and the preprocessing; the
    test split is predicted with the checkpoint to get the framework's reference outputs.

    Returns:
        The model file (``<run>/export-<format>/model.<ext>`` unless ``output_dir``).

    Raises:
        DataError: not a run folder, or the checkpoint is missing.
    """
    import lightning as L

    from medimg.pipeline.build import load_task
    from medimg.pipeline.data import build_datamodule, data_summary

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise DataError(f"{run_dir}: not a medimg run directory (no config.yaml)")
    ckpt = run_dir / "checkpoints" / f"{checkpoint}.ckpt"
    if not ckpt.is_file():
        raise DataError(f"{ckpt}: checkpoint not found (checkpoint=best|last)")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    cfg.export.format = fmt or export_format(cfg)
    datamodule, split = build_datamodule(cfg)
    task = load_task(cfg, ckpt)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    outputs = trainer.predict(task, dataloaders=datamodule.loader("test"))
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metrics = {k: v for k, v in metrics.items() if isinstance(v, dict)}
    extra = {
        "training_data": data_summary(split[split["split"] == "train"]),
        "internal_test_data": data_summary(split[split["split"] == "test"]),
    }
    target = Path(output_dir) if output_dir else run_dir / f"export-{cfg.export.format}"
    return export_run(cfg, task, datamodule, outputs, metrics, extra, run_dir, target)


def export_main(argv: list[str] | None = None) -> None:
    """``scripts/export.py RUN_DIR [--format F] [--checkpoint best|last] [--output DIR]``.

    Prints the model file's path; bad input: one line on stderr, exit status 2.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="export a run's checkpoint (with parity)")
    parser.add_argument("run_dir")
    parser.add_argument("--format", choices=sorted(FORMATS), default=None)
    parser.add_argument("--checkpoint", default="best", choices=["best", "last"])
    parser.add_argument("--output", default=None, help="folder (default <run>/export-<format>)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        path = export_from_run(args.run_dir, args.format, args.checkpoint, args.output)
    except (DataError, ExportError) as err:
        sys.stderr.write(f"medimg: error: {err}\n")
        sys.exit(2)
    print(path, flush=True)
