"""Report files: self-contained HTML that headless Chromium renders with no console errors."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medimg.evaluation.config import EvaluationConfig
from medimg.evaluation.outputs import write_set_outputs
from medimg.evaluation.segmentation import case_metrics, rank_cases
from medimg.evaluation.sets import evaluate_sets
from medimg.evaluation.subgroups import audit_table
from medimg.evaluation.tracker import to_tracker, to_wandb

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def cohort(seed: int, n: int, prefix: str, strength: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    return pd.DataFrame(
        {
            "case_id": [f"{prefix}-case{i:03d}" for i in range(n)],
            "patient_id": [f"{prefix}-PATIENT{i // 2:03d}" for i in range(n)],
            "label": y,
            "prob": 1 / (1 + np.exp(-(rng.normal(0, 1, n) + strength * y - 0.5))),
            "sex": rng.choice(["F", "M"], n),
            "age": rng.integers(25, 85, n),
            "site": prefix,
            "manufacturer": rng.choice(["Acme", "Synth"], n),
        }
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A binary evaluation (internal test + one external set) written to disk."""
    out = tmp_path_factory.mktemp("eval_report")
    val, test, ext = cohort(0, 160, "A", 2.0), cohort(1, 200, "A", 2.0), cohort(2, 200, "B", 0.8)
    tables = {"test": test, "site_b": ext}
    results = evaluate_sets("classification", tables, val, config=EvaluationConfig(n_resamples=200))
    train = cohort(3, 300, "A", 2.0)
    split = pd.concat(
        [train.assign(split="train"), val.assign(split="val"), test.assign(split="test")]
    )
    audit = audit_table(split, {"site_b": ext}, ["sex", "age_band", "site", "manufacturer"])
    return out, results, write_set_outputs(out, results, audit), tables


def test_files_and_metrics_json_layout(written):
    out, results, paths, _ = written
    for name in ("test", "site_b"):
        folder = out / "eval" / name
        assert paths[name]["folder"] == folder
        for file in (
            "metrics.json",
            "curves.json",
            "report.html",
            "roc.png",
            "pr.png",
            "reliability.png",
            "confusion.png",
            "subgroups.png",
            "comparison.png",
        ):
            assert (folder / file).is_file(), file
        assert not list(folder.glob(".*.tmp"))  # atomic writes leave no temporary files
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["set"] == name and metrics["operating_point"]["chosen_on"] == "val"
        auroc = metrics["metrics"]["auroc"]
        assert auroc["ci"][0] <= auroc["value"] <= auroc["ci"][1]
        assert len(auroc["delong_ci"]) == 2
        assert (
            "curves" not in metrics
            and "roc" in json.loads((folder / "curves.json").read_text())["positive"]
        )
    site_b = json.loads((out / "eval" / "site_b" / "metrics.json").read_text())
    assert site_b["comparisons"]["site_b"]["against"] == "test"
    assert site_b["comparisons"]["site_b"]["metrics"]["auroc"]["difference"] < 0


def test_report_is_self_contained_and_private(written):
    out, _, paths, tables = written
    for name, table in tables.items():
        html = (out / "eval" / name / "report.html").read_text()
        assert not re.search(r"https?://", html)
        assert "<script" not in html.lower()
        sources = re.findall(r'(?:src|href)="([^"]*)"', html)
        assert sources and all(s.startswith("data:") for s in sources)
        pngs = sorted(p for p in paths[name].values() if str(p).endswith(".png"))
        embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
        assert len(embedded) == len(pngs)
        assert {base64.b64decode(e) for e in embedded} == {p.read_bytes() for p in pngs}
        for patient in table["patient_id"]:
            assert patient not in html
        assert str(out) not in html  # no file paths either
        for heading in ("Metrics", "Figures", "Subgroups", "Dataset audit", "Methods"):
            assert f"<h2>{heading}</h2>" in html
        assert "site_b − test" in html  # internal vs external side by side


def chromium_driver(tmp_path, monkeypatch):
    """Headless Chromium through Debian's chromedriver, as root (--no-sandbox), offline."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM and CHROMEDRIVER, (
        "chromium and chromium-driver must be installed (make sysdeps)"
    )
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not look for downloads
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1200,1600",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def test_report_opens_in_headless_chromium(written, tmp_path, monkeypatch):
    out, *_ = written
    broken = tmp_path / "broken.html"
    broken.write_text('<html><body><img src="missing.png"></body></html>')
    driver = chromium_driver(tmp_path, monkeypatch)
    try:
        driver.get(broken.as_uri())  # control: a broken page does log a console error
        assert any(e["level"] == "SEVERE" for e in driver.get_log("browser"))
        for name in ("test", "site_b"):
            driver.get((out / "eval" / name / "report.html").as_uri())
            assert driver.title == f"Evaluation: {name}"
            errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
            assert errors == []
            loaded = driver.execute_script(
                "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
            )
            assert loaded
            shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("L")
            pixels = np.asarray(shot)
            assert (pixels < 250).mean() > 0.02  # not blank: text, tables and figures drawn
            assert len(np.unique(pixels)) > 20
    finally:
        driver.quit()


def test_tracker_payload(written):
    _, results, paths, _ = written
    payload = to_tracker(results, paths)
    table = payload["tables"]["eval/site_b/metrics"]
    assert table["columns"] == ["metric", "value", "ci_low", "ci_high"]
    assert [r[0] for r in table["data"]] == list(results["sets"]["site_b"]["metrics"])
    assert payload["images"]["eval/test/roc"].is_file()
    assert "eval/site_b/vs_test" in payload["tables"]
    assert (
        payload["scalars"]["eval/test/auroc"]
        == results["sets"]["test"]["metrics"]["auroc"]["value"]
    )
    import wandb

    logged = to_wandb(payload)
    assert isinstance(logged["eval/test/metrics"], wandb.Table)
    assert isinstance(logged["eval/test/roc"], wandb.Image)


def test_segmentation_report_with_overlays(tmp_path):
    rng = np.random.default_rng(0)
    rows, arrays = [], {}
    for case in range(6):
        image = rng.random((16, 16, 8))
        ref = np.zeros((16, 16, 8), dtype=int)
        ref[4:10, 4:10, 2:6] = 1
        pred = np.roll(ref, case % 3, axis=0)
        if case == 5:
            pred[:] = 0  # a missed structure: counted, shown as the worst case
        arrays[f"c{case}"] = (image, ref, pred)
        for row in case_metrics(pred, ref, (1.0, 1.0, 2.0), ["lesion"]):
            rows.append({"case_id": f"c{case}", "patient_id": f"PATIENT{case}", "sex": "F", **row})
    table = pd.DataFrame(rows)
    cfg = EvaluationConfig(n_resamples=50, attributes=("sex",))
    results = evaluate_sets("segmentation", {"test": table}, config=cfg)
    ranked = rank_cases(table)
    assert ranked["worst"] == "c5"
    overlays = [
        {
            "title": f"{k}: {cid}",
            "image": arrays[cid][0],
            "reference": arrays[cid][1],
            "prediction": arrays[cid][2],
        }
        for k, cid in ranked.items()
    ]
    paths = write_set_outputs(
        tmp_path, results, case_tables={"test": table}, overlays={"test": overlays}
    )
    html = paths["test"]["report"].read_text()
    assert paths["test"]["overlays"].is_file()
    assert "Per-case metrics" in html and "prediction_empty" in html
    assert "PATIENT" not in html
    assert results["sets"]["test"]["counts"]["lesion/n_prediction_empty"] == 1
