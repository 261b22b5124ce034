"""Tests of `manifests/validate.py`: what is read is checked against its table: compatible types,
values named by row and column, row rules, statuses and finite numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from manifests.schema import TABLES
from manifests.validate import ManifestError, check_finite, check_statuses, to_frame


def test_unknown_statuses_and_non_finite_numbers_are_named():
    with pytest.raises(ManifestError, match="unknown status 'maybe'"):
        check_statuses(pa.table({"status": ["ok", "maybe"]}), "shots")
    frame = pd.DataFrame({"shot_id": ["a", "b"], "fps": [24.0, np.inf]})
    with pytest.raises(ManifestError, match=r"row 1 \(b\) column 'fps'"):
        check_finite(frame, "shots", ["fps"], "out")


def test_integer_columns_with_nulls_stay_integers():
    table = pa.table({"width": pa.array([320, None], pa.int32())})
    assert to_frame(table)["width"].tolist()[0] == 320 and str(to_frame(table)["width"].dtype) == "Int32"
    assert "shots" in TABLES
