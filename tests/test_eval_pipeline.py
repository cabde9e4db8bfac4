"""The evaluation in the pipeline: a training run's eval folder, its reports, trackers, every
task kind from predict outputs to files, exported models on native grids, set naming."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from monai.metrics import compute_dice
from omegaconf import OmegaConf
from PIL import Image
from sklearn.metrics import mean_absolute_error, roc_auc_score

from medimg.evaluation.assemble import EvalSet, card_operating_point, evaluate_predictions
from medimg.evaluation.config import EvaluationConfig
from medimg.pipeline.evaluate import external_manifests
from tests.test_eval_report import chromium_driver


@pytest.mark.slow
def test_training_run_writes_the_evaluation(cls_run):
    run_dir, _ = cls_run
    flat = json.loads((run_dir / "metrics.json").read_text())
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert list(results["sets"]) == ["test", "external"]
    assert results["operating_point"]["chosen_on"] == "val"
    for name in ("test", "external"):
        folder = run_dir / "eval" / name
        for file in ("report.html", "metrics.json", "roc.png", "reliability.png", "confusion.png"):
            assert (folder / file).is_file(), (name, file)
        ours = pd.read_csv(folder / "predictions.csv")
        assert ours.equals(pd.read_csv(run_dir / "predictions" / f"{name}.csv"))
        assert "patient_id" not in ours
        auroc = roc_auc_score(ours["label"], ours["prob"])
        assert results["sets"][name]["metrics"]["auroc"]["value"] == pytest.approx(auroc, abs=1e-12)
        # Run-level metrics.json: flat headline numbers, now with the interval beside them.
        assert flat[name]["auroc_ci_low"] <= flat[name]["auroc"] <= flat[name]["auroc_ci_high"]
        assert (
            flat[name]["operating_threshold"]
            == results["operating_point"]["thresholds"]["positive"]
        )
    card = card_operating_point(results)  # what the model card can carry
    assert card["threshold"] == flat["test"]["operating_threshold"]
    assert card["source"] == "chosen on val (youden)"
    html = (run_dir / "eval" / "external" / "report.html").read_text()
    drop = results["comparisons"]["external"]["metrics"]["auroc"]
    # The external drop with its interval and test, beside the internal values.
    assert "external − test" in html and "p (unpaired)" in html
    low, high = (f"{v:.3f}" for v in drop["ci"])
    assert f"{drop['difference']:.3f} [{low}, {high}]" in html
    for heading in ("By manufacturer", "By sex", "By age_band", "Dataset audit"):
        assert heading in html
    groups = results["sets"]["test"]["subgroups"]["manufacturer"]["groups"]
    assert all(g["too_small"] for g in groups.values())  # tiny data: every group is flagged
    assert "too small to say" in (run_dir / "eval" / "test" / "report.html").read_text()
    # wandb (offline in tests) got the tables and figures.
    media = next((run_dir / "wandb").glob("offline-run-*")) / "files" / "media"
    assert list((media / "table" / "eval" / "external").glob("metrics_*.table.json"))
    assert list((media / "table" / "eval" / "external").glob("vs_test_*.table.json"))
    assert list((media / "images" / "eval" / "test").glob("roc_*.png"))


@pytest.mark.slow
def test_training_reports_open_in_headless_chromium(cls_run, tmp_path, monkeypatch):
    run_dir, _ = cls_run
    driver = chromium_driver(tmp_path, monkeypatch)
    try:
        for name in ("test", "external"):
            driver.get((run_dir / "eval" / name / "report.html").as_uri())
            assert driver.title == f"Evaluation: {name}"
            errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
            assert errors == []
            shot = np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("L"))
            assert (shot < 250).mean() > 0.02 and len(np.unique(shot)) > 20
    finally:
        driver.quit()


def manifest(ids, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "case_id": ids,
            "patient_id": [f"P{i // 2}-{seed}" for i in range(len(ids))],
            "sex": rng.choice(["F", "M"], len(ids)),
        }
    )


def one_hot(labels: np.ndarray, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(labels), k).movedim(-1, 0).float()


def segmentation_set(prefix: str, n: int = 6, shape=(12, 12, 8)) -> tuple[EvalSet, dict]:
    """Two foreground classes; the lesion is absent in every other reference."""
    outputs, images = [], {}
    for i in range(n):
        ref = np.zeros(shape, dtype=int)
        ref[2:8, 2:8, 1:6] = 1
        if i % 2:
            ref[8:11, 8:11, 3:6] = 2
        pred = np.roll(ref, i % 3, axis=0)
        case_id = f"{prefix}{i}"
        images[case_id] = np.random.default_rng(i).random(shape)
        batch = {"case_id": [case_id], "prob": one_hot(pred, 3)[None], "mask": torch.tensor(ref)}
        batch["mask"] = batch["mask"][None, None]
        if i == 0:  # a post-processed label map differs from the argmax: it is what counts
            batch["pred_mask"] = torch.zeros(1, 1, *shape, dtype=torch.long)
        outputs.append(batch)
    ids = [f"{prefix}{i}" for i in range(n)]
    item = EvalSet(outputs, manifest(ids), spacing=(1.0, 1.0, 2.0), image=images.__getitem__)
    return item, images


def test_segmentation_outputs_to_files(tmp_path):
    test, _ = segmentation_set("a")
    external, _ = segmentation_set("b")
    cfg = EvaluationConfig(n_resamples=50, classes=["liver", "lesion"], attributes=("sex",))
    split = pd.concat([test.manifest.assign(split="test"), manifest(["t0", "t1"], 3)])
    split["split"] = split["split"].fillna("train")
    evaluation = evaluate_predictions(
        "segmentation", {"test": test, "ext": external}, tmp_path, cfg, split_frame=split
    )
    cases = pd.read_csv(tmp_path / "eval" / "test" / "cases.csv", dtype={"case_id": str})
    assert "patient_id" not in cases and set(cases["class"]) == {"liver", "lesion"}
    for batch in test.outputs:
        case_id = batch["case_id"][0]
        labels = batch.get("pred_mask", batch["prob"].argmax(1, keepdim=True))[0, 0].numpy()
        ref = one_hot(batch["mask"][0, 0], 3)[None]
        dice = compute_dice(one_hot(labels, 3)[None], ref, include_background=False)[0]
        for k, cls in enumerate(["liver", "lesion"]):
            row = cases[(cases["case_id"] == case_id) & (cases["class"] == cls)].iloc[0]
            if row["status"] == "ok":
                assert row["dice"] == pytest.approx(float(dice[k]), abs=1e-6)
    predictions = pd.read_csv(tmp_path / "eval" / "test" / "predictions.csv")
    assert predictions.loc[0, "predicted_voxels"] == 0  # a0's pred_mask, not its argmax
    counts = evaluation.results["sets"]["test"]["counts"]
    assert counts["lesion/n_both_empty"] + counts["lesion/n_reference_empty"] == 3
    html = (tmp_path / "eval" / "test" / "report.html").read_text()
    assert (tmp_path / "eval" / "test" / "overlays.png").is_file()
    worst = cases.groupby("case_id")["dice"].mean().idxmin()
    assert f"worst (dice {cases.groupby('case_id')['dice'].mean().min():.3f}): {worst}" in html
    assert "Per-case metrics" in html and "P0-0" not in html
    assert "dice_ci_low" not in evaluation.headline["test"]  # historical Dice kept as it was


def test_multilabel_multiclass_and_regression_outputs(tmp_path):
    rng = np.random.default_rng(0)
    names = ["nodule", "effusion", "cardiomegaly"]

    def multilabel(prefix: str, n: int = 40) -> EvalSet:
        y = (rng.random((n, 3)) < 0.4).astype(float)
        p = 1 / (1 + np.exp(-(rng.normal(0, 1, (n, 3)) + 2 * y - 1)))
        batch = {"case_id": [f"{prefix}{i}" for i in range(n)], "prob": torch.tensor(p)}
        batch["label"] = torch.tensor(y)
        return EvalSet([batch], manifest(batch["case_id"], n))

    cfg = EvaluationConfig(n_resamples=50, classes=names, attributes=())
    test = multilabel("t")
    done = evaluate_predictions(
        "classification", {"test": test}, tmp_path, cfg, val=multilabel("v")
    )
    assert list(done.results["operating_point"]["thresholds"]) == names
    assert "threshold" not in card_operating_point(done.results)  # one per label instead
    per_class = done.results["sets"]["test"]["per_class"]
    y, p = test.outputs[0]["label"].numpy(), test.outputs[0]["prob"].numpy()
    for k, name in enumerate(names):
        assert per_class[name]["auroc"]["value"] == pytest.approx(roc_auc_score(y[:, k], p[:, k]))

    y = rng.integers(0, 3, 60)
    p = torch.softmax(torch.tensor(rng.normal(0, 1, (60, 3)) + 2 * np.eye(3)[y]), 1)
    batch = {"case_id": [f"m{i}" for i in range(60)], "prob": p, "label": torch.tensor(y)}
    multiclass = EvalSet([batch], manifest(batch["case_id"]))
    cfg = EvaluationConfig(n_resamples=50, classes=["a", "b", "c"], attributes=())
    done = evaluate_predictions(
        "classification", {"test": multiclass}, tmp_path / "mc", cfg, val=multiclass
    )
    macro = roc_auc_score(y, p.numpy(), multi_class="ovr", average="macro")
    assert done.results["sets"]["test"]["metrics"]["auroc"]["value"] == pytest.approx(macro)

    target = rng.normal(50, 10, 30)
    batch = {"case_id": [f"r{i}" for i in range(30)], "pred": torch.tensor(target + 3)}
    batch["label"] = torch.tensor(target)
    regression = EvalSet([batch], manifest(batch["case_id"]))
    done = evaluate_predictions(
        "regression", {"test": regression}, tmp_path / "reg", EvaluationConfig(n_resamples=50)
    )
    flat = done.headline["test"]
    assert flat["mae"] == pytest.approx(mean_absolute_error(target, target + 3))
    assert flat["mae_ci_low"] <= flat["mae"] <= flat["mae_ci_high"]
    assert (tmp_path / "reg" / "eval" / "test" / "report.html").is_file()


@pytest.mark.slow
def test_exported_segmentation_is_evaluated_on_each_images_grid(manifests, tmp_path):
    import nibabel as nib

    from medimg.data.manifest import load_manifest
    from medimg.evaluation.exported import predict_exported
    from medimg.export import load_model
    from medimg.export.tiny import export_tiny

    model = load_model(export_tiny("segmentation", tmp_path))
    frame = load_manifest(manifests["external"], "segmentation").head(2)
    item = predict_exported(model, frame, ["lesion"])
    rows = item.cases.set_index("case_id")
    for batch, case_id, mask_file in zip(
        item.outputs, frame["case_id"], frame["mask"], strict=True
    ):
        # The reference and the label map are on the image's own grid, in its millimetres.
        reference = nib.load(mask_file)
        lesion = int((np.asarray(reference.dataobj) == 1).sum())
        assert batch["mask"].shape[2:] == batch["pred_mask"].shape[2:]
        assert int((batch["mask"] == 1).sum()) == lesion
        voxel_ml = float(np.prod(reference.header.get_zooms()[:3])) / 1000
        assert rows.loc[case_id, "volume_reference_ml"] == pytest.approx(lesion * voxel_ml)
        predicted = int((batch["pred_mask"] == 1).sum())
        assert rows.loc[case_id, "volume_predicted_ml"] == pytest.approx(predicted * voxel_ml)
    assert item.image(frame["case_id"].iloc[0]).shape == tuple(item.outputs[0]["mask"].shape[2:])


def test_external_sets_are_named_from_the_command():
    def names(**cfg) -> dict[str, Path]:
        return external_manifests(OmegaConf.create({"manifest": None, "name": None, **cfg}))

    assert names(external="/d/site_B/manifest.csv") == {"site_B": Path("/d/site_B/manifest.csv")}
    assert list(names(external=["/d/a/manifest.csv", "/e/a/manifest.csv", "/f/x.csv"])) == [
        "a",
        "a_2",
        "x",
    ]
    assert list(names(external={"b": "/x.csv"}, manifest="/y.csv", name="c")) == ["b", "c"]
    with pytest.raises(ValueError, match="'test' clashes"):
        names(external={"test": "/x.csv"})


def test_command_line_forms_compose():
    from hydra import compose, initialize_config_dir

    from medimg.pipeline.entry import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        one = compose("evaluate", overrides=["run_dir=/r", "+external=/x/m.csv"])
        several = compose("evaluate", overrides=["+external=[/a.csv,/b.csv]"])
        named = compose("evaluate", overrides=["+external.site_b=/b.csv", "+external.c=/c.csv"])
        train = compose("train", overrides=["evaluation.threshold_method=sensitivity"])
    assert one.external == "/x/m.csv" and list(several.external) == ["/a.csv", "/b.csv"]
    assert dict(named.external) == {"site_b": "/b.csv", "c": "/c.csv"}
    assert one.evaluation.n_resamples == 1000 and train.evaluation.threshold_method == "sensitivity"
