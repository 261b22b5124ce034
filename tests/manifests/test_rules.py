"""Tests of `manifests/rules.py`: each table's row rules name the column and the rule; a shot that
ends before it starts is refused on read."""

from __future__ import annotations

import pytest

from manifests.io import ManifestError, read_table, write_part
from manifests.rules import ROW_RULES
from tests.support.manifests import shot


def test_the_rules_name_their_columns_and_a_broken_shot_is_refused_on_read(tmp_path):
    columns = {column for column, _, _ in ROW_RULES.get("shots", ())}
    assert {"end_frame", "fps"} <= columns
    bad = shot("v1", 0) | {"end_frame": 0}
    with pytest.raises(ManifestError, match="end_frame"):
        write_part(tmp_path, "shots", "v1", [bad])
        read_table(tmp_path, "shots")
