"""The ``medimg`` command: scan, check and synth as a user runs them."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd

from medimg.data.manifest import read_manifest

CLI = [sys.executable, "-m", "medimg.cli"]


def _run(*args, cwd):
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_scan_writes_one_row_per_series_and_rescans_incrementally(data_dir, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(next(data_dir.glob("*/site_B/images")), tree)
    out = tmp_path / "series.csv"
    first = _run("scan", str(tree), "-o", str(out), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    table = pd.read_csv(out)
    assert (
        len(table) == 8
        and set(table["status"]) == {"ok"}
        and set(table["manufacturer"]) == {"Acme Imaging"}
    )
    second = _run("scan", str(tree), "-o", str(out), cwd=tmp_path)
    assert "0 read" in second.stdout
    # The index holds the archive's headers: beside the output, never inside the scanned tree.
    assert (tmp_path / "series.index.json").is_file()
    assert sorted(p.name for p in tree.iterdir()) == sorted(
        p.name for p in next(data_dir.glob("*/site_B/images")).iterdir()
    )


def test_scan_never_writes_into_the_scanned_tree_by_default(
    data_dir, tmp_path, monkeypatch, capsys
):
    from medimg.cli import main

    tree = tmp_path / "tree"
    shutil.copytree(next(data_dir.glob("*/site_B/images")), tree)
    before = sorted(p.relative_to(tree) for p in tree.rglob("*"))
    monkeypatch.chdir(tree)
    assert main(["scan", str(tree)]) == 2
    assert "inside the scanned tree" in capsys.readouterr().err
    assert sorted(p.relative_to(tree) for p in tree.rglob("*")) == before
    index = tmp_path / "elsewhere" / "idx.json"
    assert main(["scan", str(tree), "-o", str(tmp_path / "t.csv"), "--index", str(index)]) == 0
    assert index.is_file() and not (tmp_path / "t.index.json").exists()


def test_check_reads_every_case_and_reports_unreadable_ones(manifests, tmp_path):
    frame = read_manifest(manifests["internal"], ["case_id", "patient_id", "image"])
    broken = tmp_path / "broken_series"
    shutil.copytree(frame.loc[1, "image"], broken)
    victim = sorted(broken.iterdir())[5]
    victim.unlink()  # a missing slice in the middle of the stack
    frame.loc[1, "image"] = str(broken)
    path = tmp_path / "m.csv"
    frame.to_csv(path, index=False)
    result = _run("check", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "row 3 (case A0002_s1): column 'image'" in result.stderr and "missing" in result.stderr
    ok = _run("check", str(manifests["external"]), "--task", "segmentation", cwd=tmp_path)
    assert ok.returncode == 0 and "8 cases OK" in ok.stdout
