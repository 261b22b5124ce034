"""Tests of `manifests/schema.py`: the single source of truth for every manifest table's columns and
types."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from manifests import read_table
from manifests.io import ManifestError, write_part
from manifests.probe import failed_video
from manifests.schema import RECORDS, SIGNAL_COLUMNS, TABLES, ShotCaptionRecord, ShotRecord, Status, VideoRecord

SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "schemas_v1.json"


def test_every_table_schema_derived_from_its_record_equals_the_schema_before_records():
    """The schemas as they were written out field by field before they were derived (schema v1)."""
    reference = json.loads(SCHEMAS.read_text())
    assert list(RECORDS) == list(TABLES) == list(reference)
    for name, schema in TABLES.items():
        fields = [[f.name, str(f.type), f.nullable] for f in schema]
        # Columns added since, nullable at the end: the shots' quality signals, the captioner's seconds.
        since = {"shots": list(SIGNAL_COLUMNS), "annotations": ["seconds"], "shot_captions": ["seconds"]}
        if name in since:
            added = fields[len(reference[name]["fields"]) :]
            assert [f[0] for f in added] == since[name] and all(f[2] for f in added)
            fields = fields[: len(reference[name]["fields"])]
        metadata = {k.decode(): v.decode() for k, v in schema.metadata.items()}
        assert {"metadata": metadata, "fields": fields} == reference[name], name
        assert RECORDS[name].schema() == schema and RECORDS[name].TABLE == name


def test_a_record_is_built_by_keyword_reads_like_a_row_and_refuses_unknown_columns():
    with pytest.raises(TypeError):
        VideoRecord(video_id="v")  # source_path and status are required
    row = failed_video("/data/a.mp4", "/data/a.mp4: file not found", "probe")
    assert row["status"] == row.status == Status.FAILED and row.get("fps") is None and "error" in row
    assert row.video_id.startswith("path-") and row.error_stage == "probe"
    with pytest.raises(KeyError, match="not a column of table videos"):
        row["colour"] = 1
    with pytest.raises(AttributeError):
        row.colour = 1  # slots: a misspelt field is an error, not a silent new attribute
    assert list(row.keys()) == TABLES["videos"].names and dict(row.items()) == row.as_dict()


def test_records_are_written_and_read_back_through_the_validated_io(tmp_path):
    shot = ShotRecord(video_id="v", shot_id="v_0000000", shot_index=0, source_path="/v.mp4", start_frame=0,
                      end_frame=24, num_frames=24, start_s=0.0, end_s=1.0, duration_s=1.0, fps=24.0, width=64,
                      height=48, status=Status.OK)  # fmt: skip
    write_part(tmp_path, "shots", "v", [shot])
    back = read_table(tmp_path, "shots").iloc[0]
    assert back["shot_id"] == "v_0000000" and back["num_frames"] == 24 and back["status"] == "ok"
    caption = ShotCaptionRecord(shot_id="v_0000000", video_id="v", caption="Actor1 walks.", status=Status.OK,
                                characters=[{"name": "Actor1", "description": "a tall man"}])  # fmt: skip
    write_part(tmp_path, "shot_captions", "v", [caption])
    assert read_table(tmp_path, "shot_captions").iloc[0]["characters"][0]["name"] == "Actor1"
    bad = ShotRecord(**(shot.as_dict() | {"status": "done"}))
    with pytest.raises(ManifestError, match="unknown status 'done'"):
        write_part(tmp_path, "shots", "w", [bad])
    assert isinstance(TABLES["shots"], pa.Schema)


def test_a_status_outside_the_vocabulary_is_refused_when_written(tmp_path):
    with pytest.raises(ManifestError, match="unknown status 'done'"):
        write_part(tmp_path, "videos", "x", [{"video_id": "x", "source_path": "/x.mp4", "status": "done"}])


def test_docs_columns_md_is_the_generated_table_of_every_column():
    from manifests.schema import columns_markdown
    from tests.support import REPO

    text = (REPO / "docs" / "columns.md").read_text()
    assert text == columns_markdown(), "regenerate it: python -m manifests columns > docs/columns.md"
    for name, schema in TABLES.items():
        assert f"## {name}" in text
        for field in schema:
            assert f"| `{field.name}` |" in text and field.metadata[b"description"], (name, field.name)
