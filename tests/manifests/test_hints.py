"""Tests of `manifests/hints.py`: one 'did you mean' for the whole project."""

from __future__ import annotations

from manifests.hints import did_you_mean


def test_the_closest_known_word_or_nothing():
    assert did_you_mean("--outptu", ["--output", "--input"]) == " (did you mean --output?)"
    assert did_you_mean("optim.lt", ["optim.lr", "run.output"]) == " (did you mean optim.lr?)"
    assert did_you_mean("zzz", ["--output"]) == ""
