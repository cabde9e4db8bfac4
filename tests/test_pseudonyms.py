"""Run folders name patients by keyed pseudonyms; the key and the mapping stay outside them."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from medimg.data.errors import DataError
from medimg.pipeline.train import write_splits
from medimg.privacy import pseudonyms


def _split() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "case_id": ["c1", "c2", "c3"],
            "patient_id": ["MRN0012345", "MRN0012345", "MRN0099999"],
            "split": ["train", "train", "test"],
            "image": ["/archive/MRN0012345/ct", "/archive/MRN0012345/ct2", "/archive/x"],
        }
    )


def _cfg(tmp_path: Path, **privacy) -> OmegaConf:
    base = {"keep_patient_ids": False, "key_file": str(tmp_path / "key"), "mapping_file": None}
    return OmegaConf.create({"privacy": {**base, **privacy}})


def test_splits_name_patients_by_keyed_pseudonyms(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    table = pd.read_csv(write_splits(_cfg(tmp_path), _split(), run_dir))
    assert list(table.columns) == ["case_id", "patient_id", "split"]  # no image paths either
    assert table["patient_id"].str.fullmatch(r"psn-[0-9a-f]{16}").all()
    assert table["patient_id"].iloc[0] == table["patient_id"].iloc[1] != table["patient_id"].iloc[2]
    assert "MRN00" not in (run_dir / "splits.csv").read_text()
    key_file = tmp_path / "key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_bytes()
    assert table["patient_id"].iloc[2] == pseudonyms.pseudonym("MRN0099999", key)
    # The same key gives the same pseudonyms in the next run; another key gives others.
    again = pd.read_csv(write_splits(_cfg(tmp_path), _split(), tmp_path / "run2"))
    assert again["patient_id"].tolist() == table["patient_id"].tolist()
    other = pd.read_csv(write_splits(_cfg(tmp_path / "o"), _split(), tmp_path / "run3"))
    assert set(other["patient_id"]).isdisjoint(table["patient_id"])


def test_real_ids_only_when_asked_and_the_mapping_only_outside_the_run(tmp_path: Path) -> None:
    kept = pd.read_csv(
        write_splits(_cfg(tmp_path, keep_patient_ids=True), _split(), tmp_path / "r")
    )
    assert kept["patient_id"].tolist() == _split()["patient_id"].tolist()
    mapping = tmp_path / "owner" / "mapping.csv"
    table = pd.read_csv(
        write_splits(_cfg(tmp_path, mapping_file=str(mapping)), _split(), tmp_path / "m")
    )
    pairs = pd.read_csv(mapping)
    assert dict(zip(pairs["pseudonym"], pairs["patient_id"], strict=True)) == dict(
        zip(table["patient_id"], _split()["patient_id"], strict=True)
    )
    inside = str(tmp_path / "bad" / "mapping.csv")
    with pytest.raises(DataError, match="inside the run folder"):
        write_splits(_cfg(tmp_path, mapping_file=inside), _split(), tmp_path / "bad")
    assert not (tmp_path / "bad" / "mapping.csv").exists()


def test_a_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("secret")
    with pytest.raises(DataError, match=r"key.*not a medimg pseudonym key \(6 bytes"):
        write_splits(_cfg(tmp_path), _split(), tmp_path / "run")


@pytest.mark.slow
def test_no_table_of_a_real_run_holds_a_manifest_patient_id(cls_run, manifests) -> None:
    run_dir, _ = cls_run
    real = set()
    for manifest in manifests.values():
        real |= set(pd.read_csv(manifest, dtype=str)["patient_id"])
    splits = pd.read_csv(run_dir / "splits.csv", dtype=str)
    assert splits["patient_id"].str.startswith("psn-").all()
    # Every table and JSON file of the run, cell by cell (short ids also occur by chance in
    # binary files, so checkpoints are covered by the tracker/checkpoint canary tests instead).
    for path in run_dir.rglob("*"):
        if path.suffix == ".csv":
            cells = set(pd.read_csv(path, dtype=str).to_numpy().ravel())
        elif path.suffix == ".json":
            cells = set(_strings(json.loads(path.read_text())))
        else:
            continue
        assert not cells & real, f"{path.relative_to(run_dir)} names patients"
    home_key = run_dir.parents[2] / "home" / ".medimg" / "pseudonym.key"
    assert home_key.is_file() and not home_key.is_relative_to(run_dir)


def _strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (str(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [str(value)]
