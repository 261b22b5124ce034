"""Tests of `manifests/corpus.py`: the corpus duplicates file written whole and read back; a damaged
one is a clear error."""

from __future__ import annotations

import pandas as pd
import pytest

from manifests.corpus import FILE, corpus_duplicates, write_corpus_duplicates
from manifests.io import ManifestError


def test_written_whole_and_read_back(tmp_path):
    assert corpus_duplicates(tmp_path) == set()  # never run: nothing to skip
    rows = pd.DataFrame({"shot_id": ["b", "c"], "duplicate_of": ["a", "a"], "similarity": [0.99, 0.98],
                         "embedder": ["viclip-l14"] * 2})  # fmt: skip
    write_corpus_duplicates(tmp_path, rows)
    assert corpus_duplicates(tmp_path) == {"b", "c"}
    write_corpus_duplicates(tmp_path, rows.iloc[:1])  # replaced, not appended
    assert corpus_duplicates(tmp_path) == {"b"}
    (tmp_path / FILE).write_bytes(b"not parquet")
    with pytest.raises(ManifestError, match="not a corpus duplicates file"):
        corpus_duplicates(tmp_path)
