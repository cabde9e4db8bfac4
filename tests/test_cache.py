"""The on-disk cache of prepared cases: keyed by content and preprocessing, loaded safely."""

from __future__ import annotations

import shutil

import torch

from medimg.data.cache import ContentKey
from medimg.data.datamodule import ManifestDataModule
from medimg.data.manifest import load_manifest
from medimg.data.preprocess import PreprocessConfig, VolumePreprocessor
from medimg.data.splits import split_by_patient


def _module(frame, cache_dir, size=(16, 16, 16)):
    pre = VolumePreprocessor(PreprocessConfig(spacing=(12.0, 12.0, 12.0), size=size))
    return ManifestDataModule(
        frame,
        None,
        task="classification",
        preprocessor=pre,
        cache_dir=cache_dir,
        cache_context={"size": size},
        prepare_workers=0,
    )


def test_second_preparation_reads_the_cache_and_matches(manifests, tmp_path):
    frame = split_by_patient(
        load_manifest(manifests["internal"], "classification"), 0.2, 0.2, seed=0
    )
    first = _module(frame, tmp_path / "cache").prepared("test")
    files = sorted((tmp_path / "cache").glob("*.pt"))
    assert len(files) == len(first)
    for path in files:  # plain tensors and strings: loadable without unpickling arbitrary objects
        torch.load(path, weights_only=True)
    mtimes = [p.stat().st_mtime_ns for p in files]
    second = _module(frame, tmp_path / "cache").prepared("test")
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "cache").glob("*.pt"))] == mtimes
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a["image"], b["image"]) and a["case_id"] == b["case_id"]


def test_changed_preprocessing_or_content_changes_the_key(manifests, tmp_path):
    record = load_manifest(manifests["internal"], "classification").iloc[0].to_dict()
    base = ContentKey({"size": [16, 16, 16]})(record)
    assert ContentKey({"size": [16, 16, 16]})(record) == base
    assert ContentKey({"size": [32, 16, 16]})(record) != base
    copy = tmp_path / "series"
    shutil.copytree(record["image"], copy)
    same_content = ContentKey({"size": [16, 16, 16]})({**record, "image": str(copy)})
    assert same_content == base  # the key follows the bytes, not the path
    first_slice = sorted(copy.iterdir())[0]
    first_slice.write_bytes(first_slice.read_bytes()[:-2] + b"\x00\x01")
    assert ContentKey({"size": [16, 16, 16]})({**record, "image": str(copy)}) != base
