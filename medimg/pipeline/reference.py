"""Reference models beside an image + clinical-data model: covariates only, and image only.

A fusion model is only worth its complexity when it beats both sources on their own, so a run
with ``data.covariates`` also fits (1) a scikit-learn model on the same covariate columns and the
same patient split, and (2) the same image network without covariates, trained like the main
model in a sub-folder of the run. Their metrics go to the run's ``metrics.json``.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import mean_absolute_error, mean_squared_error, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medimg.data import keys
from medimg.files import write_atomic

log = logging.getLogger(__name__)


def covariate_model(kind: str, multilabel: bool):
    """Missing values imputed with an indicator, standardised, then a linear model."""
    head = Ridge(alpha=1.0) if kind == "regression" else LogisticRegression(max_iter=1000)
    if multilabel:
        from sklearn.multiclass import OneVsRestClassifier

        head = OneVsRestClassifier(head)
    return make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        StandardScaler(),
        head,
    )


def _matrix(frame: pd.DataFrame) -> np.ndarray:
    return np.stack([np.asarray(v, dtype=np.float64) for v in frame[keys.COVARIATES]])


def _targets(frame: pd.DataFrame) -> np.ndarray:
    values = frame[keys.LABEL].tolist()
    return np.asarray(values, dtype=np.float64)


def _score(kind: str, y: np.ndarray, model, x: np.ndarray) -> dict:
    """The main model's headline metrics, so the three numbers compare like for like."""
    if kind == "regression":
        pred = model.predict(x)
        return {
            "mae": float(mean_absolute_error(y, pred)),
            "rmse": float(np.sqrt(mean_squared_error(y, pred))),
            "n": int(len(y)),
        }
    prob = model.predict_proba(x)
    if y.ndim == 2:  # multi-label: one column of probabilities per label
        auroc = roc_auc_score(y, prob, average="macro")
    elif prob.shape[1] == 2:
        auroc = roc_auc_score(y, prob[:, 1])
    else:
        auroc = roc_auc_score(y, prob, multi_class="ovr", average="macro")
    return {"auroc": float(auroc), "n": int(len(y))}


def covariates_only(
    kind: str,
    split: pd.DataFrame,
    external: dict[str, pd.DataFrame],
    multilabel: bool,
    out_dir: Path | None = None,
) -> dict:
    """Fit on the training split's covariates; metrics on the test split and external sets.

    With ``out_dir``, a binary model's predictions go to ``out_dir/predictions/<set>.csv``
    (``case_id, prob, label``, like the run's own) for :func:`compare_with_references`.
    """
    train = split[split["split"] == "train"]
    model = covariate_model(kind, multilabel)
    y_train = _targets(train)
    model.fit(_matrix(train), y_train if kind == "regression" else y_train.astype(int))
    sets = {"test": split[split["split"] == "test"], **external}
    if out_dir is not None and kind == "classification" and not multilabel:
        for name, frame in sets.items():
            prob = model.predict_proba(_matrix(frame))
            if prob.shape[1] != 2:
                break
            table = pd.DataFrame(
                {
                    "case_id": frame["case_id"].to_numpy(),
                    "prob": prob[:, 1],
                    "label": _targets(frame),
                }
            )
            path = out_dir / "predictions" / f"{name}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, lambda tmp, t=table: t.to_csv(tmp, index=False))
    return {name: _score(kind, _targets(f), model, _matrix(f)) for name, f in sets.items()}


def compare_with_references(run_dir: Path, references: dict[str, Path]) -> dict:
    """The run's AUROC minus each reference's on the same cases: paired DeLong CI and p-value.

    Binary classification only (the predictions files hold one probability per case); sets or
    references without a predictions file, or with fewer than two cases of a class, are left out.

    Args:
        run_dir: the run (its ``predictions/<set>.csv``).
        references: reference name -> folder with ``predictions/<set>.csv``.

    Returns:
        ``{reference: {set: {auroc_difference, ci_low, ci_high, p_value, n}}}``.
    """
    from medimg.evaluation.stats import delong_paired_test

    out: dict = {}
    for path in sorted((run_dir / "predictions").glob("*.csv")):
        main = pd.read_csv(path)
        if set(main.columns) != {"case_id", "prob", "label"}:
            continue
        for name, folder in references.items():
            other = folder / "predictions" / path.name
            if not other.is_file():
                continue
            both = main.merge(pd.read_csv(other), on="case_id", suffixes=("", "_reference"))
            y = both["label"].to_numpy().astype(int)
            if len(both) != len(main) or np.bincount(y, minlength=2).min() < 2:
                continue  # DeLong's variance needs two cases of each class
            test = delong_paired_test(y, both["prob_reference"].to_numpy(), both["prob"].to_numpy())
            out.setdefault(name, {})[path.stem] = {
                "auroc_difference": test["difference"],
                "ci_low": float(test["ci"][0]),
                "ci_high": float(test["ci"][1]),
                "p_value": test["p_value"],
                "n": int(len(both)),
            }
    return out


def image_only_config(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """The run's config with the fusion network's image branch as the whole network."""
    if "image_net" not in cfg.net:
        raise ValueError(
            "reference.image_only needs a fusion network with an `image_net` (net=fusion_*); "
            "set reference.image_only=false for other networks"
        )
    derived = copy.deepcopy(cfg)
    with open_dict(derived):
        image_net = OmegaConf.to_container(cfg.net.image_net, resolve=True)
        # MONAI spells the output count out_channels (DenseNet) or num_classes (ResNet, ViT).
        output_key = "num_classes" if "num_classes" in image_net else "out_channels"
        image_net[output_key] = int(cfg.task.num_classes)
        derived.net = OmegaConf.create(image_net)
        derived.data.covariates = []
        derived.reference.image_only = False
        derived.init.from_image_only = False
        derived.reference.covariates_only = False
        derived.export.enabled = False
        derived.logger = None
        derived.paths.output_dir = str(run_dir / "reference_image_only")
        derived.experiment_name = f"{cfg.experiment_name}_image_only"
        for callback in (derived.callbacks or {}).values():
            if callback is not None and "dirpath" in callback:
                callback.dirpath = str(run_dir / "reference_image_only" / "checkpoints")
    return derived


def image_only(cfg: DictConfig, run_dir: Path) -> tuple[dict, Path]:
    """Train the image-only network like the main model.

    Returns:
        Its test and external metrics, and its selected network's weights (a state_dict saved
        as ``reference_image_only/image_net.pt``, for ``init.from_image_only``).
    """
    from medimg.pipeline.train import fit

    derived = image_only_config(cfg, run_dir)
    log.info("reference: training the image-only network in %s", derived.paths.output_dir)
    out, task = fit(derived)
    weights = out / "image_net.pt"
    write_atomic(weights, lambda tmp: torch.save(task.net.state_dict(), tmp))
    metrics = json.loads((out / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if isinstance(v, dict)}, weights


def with_image_encoder(cfg: DictConfig, weights: Path) -> DictConfig:
    """The run's config with its fusion network starting from the image-only network's weights.

    The image-only network's output layer (classes) differs from the fusion network's feature
    layer, so that layer is left as initialised (non-strict load, reported in the log).
    """
    derived = copy.deepcopy(cfg)
    with open_dict(derived):
        derived.init.weights = str(weights)
        derived.init.strict = False
    return derived


def _processes(trainer: DictConfig) -> int:
    """How many processes Lightning will start for ``trainer`` (0: more than one, not known)."""
    nodes = int(trainer.get("num_nodes", 1) or 1)
    devices = trainer.get("devices", 1)
    if "ddp" in str(trainer.get("strategy", "auto")).lower() or nodes > 1:
        return 0
    if OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)):
        return 1 if len(devices) == 1 else 0
    if str(devices) == "auto":
        # Lightning's "auto" takes every GPU it finds (else one CPU process).
        gpu = str(trainer.get("accelerator", "auto")) in ("auto", "gpu", "cuda")
        return 0 if gpu and torch.cuda.device_count() > 1 else 1
    return 1 if str(devices).strip() == "1" else 0


def check_image_encoder_init(cfg: DictConfig) -> None:
    """Preflight of ``init.from_image_only``: what it needs, named in a clear error."""
    if not cfg.init.get("from_image_only", False):
        return
    problems = []
    if "image_net" not in cfg.net:
        problems.append("a fusion network with an image_net (net=fusion_*)")
    if not cfg.reference.image_only:
        problems.append("reference.image_only=true (the image-only network it starts from)")
    if cfg.init.weights:
        problems.append("no init.weights of its own (it sets them)")
    if cfg.get("stage", "fit") != "fit" or cfg.get("ckpt_path"):
        problems.append("stage=fit without ckpt_path (a new training run)")
    if _processes(cfg.trainer) != 1:
        problems.append("a single process (the reference is trained before the main model)")
    if problems:
        raise ValueError("init.from_image_only=true needs " + "; ".join(problems))
