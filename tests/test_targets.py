"""Study columns: targets, label maps and covariates from config; bad values named before training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medimg.data.errors import DataError
from medimg.data.manifest import load_manifest
from medimg.data.targets import CovariateCoding, StudyColumns


def _table(manifests, rows):
    """The tiny internal manifest's first rows with absolute image/mask paths."""
    frame = pd.read_csv(manifests["internal"]).head(rows)
    root = manifests["internal"].parent
    for column in ("image", "mask"):
        frame[column] = [str(root / v) for v in frame[column]]
    return frame


def _manifest(tmp_path, manifests, **columns):
    frame = _table(manifests, 6)
    for name, values in columns.items():
        frame[name] = values
    path = tmp_path / "study.csv"
    frame.to_csv(path, index=False)
    return path


def test_multilabel_columns_become_one_vector_per_case(tmp_path, manifests):
    path = _manifest(tmp_path, manifests, a=[0, 1, 0, 1, 1, 0], b=[1, 1, 0, 0, 1, 0])
    frame = load_manifest(path, "classification", StudyColumns(label=["a", "b"]))
    assert frame["label"].tolist() == [[0, 1], [1, 1], [0, 0], [1, 0], [1, 1], [0, 0]]


def test_a_multilabel_value_other_than_0_or_1_is_named(tmp_path, manifests):
    path = _manifest(tmp_path, manifests, a=[0, 1, 2, 1, 1, 0])
    with pytest.raises(DataError, match=r"row 4 \(case .*\): column 'a': expected 0 or 1"):
        load_manifest(path, "classification", StudyColumns(label=["a"]))


def test_a_regression_target_that_is_not_a_number_is_named(tmp_path, manifests):
    path = _manifest(tmp_path, manifests, volume=["1.5", "2", "big", "0", "3", "4"])
    with pytest.raises(DataError, match=r"row 4 .*column 'volume': expected a number, got 'big'"):
        load_manifest(path, "regression", StudyColumns(label="volume"))


def test_mask_column_is_read_as_the_mask(tmp_path, manifests):
    frame = _table(manifests, 4)
    path = tmp_path / "organs_study.csv"
    frame.rename(columns={"mask": "organ_map"}).to_csv(path, index=False)
    loaded = load_manifest(path, "segmentation", StudyColumns(mask="organ_map"))
    assert all(str(manifests["internal"].parent) in m for m in loaded["mask"])


def test_covariates_two_level_text_is_coded_from_the_training_split():
    train = pd.DataFrame({"age": [50, 60, np.nan], "sex": ["F", "M", "F"]})
    coding = CovariateCoding.fit(train, ["age", "sex"], "m.csv")
    matrix = coding.transform(pd.DataFrame({"age": [70, np.nan], "sex": ["M", None]}), "x.csv")
    np.testing.assert_array_equal(matrix[0], [70.0, 1.0])
    assert np.isnan(matrix[1]).all()


def test_covariate_problems_are_named_with_file_and_column():
    train = pd.DataFrame({"sex": ["F", "M"], "site": ["a", "b"], "crp": [1.0, 2.0]})
    coding = CovariateCoding.fit(train, ["sex", "crp"], "m.csv")
    with pytest.raises(DataError, match=r"ext.csv: covariate column 'sex' has level\(s\) \['X'\]"):
        coding.transform(pd.DataFrame({"sex": ["X"], "crp": [1.0]}), "ext.csv")
    with pytest.raises(
        DataError, match=r"ext.csv row 2: covariate column 'crp': expected a number"
    ):
        coding.transform(pd.DataFrame({"sex": ["F"], "crp": ["high"]}), "ext.csv")
    three = pd.DataFrame({"grade": ["a", "b", "c"]})
    with pytest.raises(DataError, match=r"m.csv: covariate column 'grade' has 3 text levels"):
        CovariateCoding.fit(three, ["grade"], "m.csv")
