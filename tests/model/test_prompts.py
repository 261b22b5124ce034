"""Tests of `model/prompts.py`: prompt files for generation and evaluation: a JSON list of prompts, a
scene description ({background, characters, scenes}, the paper's evaluation format), or one story
of a list of them. Every "ActorK" in a scene becomes "ActorK (description)" and the background is
appended."""

from __future__ import annotations

import json

import pytest

from model.generate import main
from model.prompts import PromptFileError, load_prompts


@pytest.mark.parametrize(
    "content,message",
    [
        (b'["caf\xe9 au lait"]', "not UTF-8 text"),
        (
            b'{"characters": [{"name": "Actor1", "description": null}], "scenes": ["Actor1 walks"]}',
            "non-empty description",
        ),
        (b'{"background": 3, "scenes": ["a man walks"]}', "'background' must be text"),
    ],
)
def test_bad_prompt_files_are_one_clear_line(tmp_path, capsys, content, message):

    prompts = tmp_path / "p.json"
    prompts.write_bytes(content)
    assert main(["--model", str(tmp_path / "no-model"), "--prompts", str(prompts), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_both_prompt_formats_parse(tmp_path):
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps(["one", " two "]))
    assert load_prompts(listing) == ["one", "two"]
    scenes = tmp_path / "scenes.json"
    scenes.write_text(json.dumps({
        "background": "A rainy street at night.",
        "characters": [{"name": "Actor1", "description": "a tall man in a grey coat"},
                       {"name": "Actor2", "description": "a woman with a red umbrella"}],
        "scenes": ["Actor1 waits under a lamp.", "Actor2 walks up to Actor1.", {"description": "Actor1 (a tall man in a grey coat) smiles."}],
    }))  # fmt: skip
    prompts = load_prompts(scenes)
    assert prompts[0] == "Actor1 (a tall man in a grey coat) waits under a lamp. A rainy street at night."
    assert prompts[1].startswith("Actor2 (a woman with a red umbrella) walks up to Actor1 (a tall man in a grey coat).")
    assert prompts[2].count("(a tall man in a grey coat)") == 1


@pytest.mark.parametrize(
    "content,message",
    [
        ("not json", "not valid JSON"),
        ("[]", "one non-empty string per scene"),
        ('{"characters": []}', "'scenes' must be a non-empty list"),
        ('{"scenes": ["Actor3 runs"], "characters": [{"name": "Actor1", "description": "x"}]}', "Actor3"),
        ('{"scenes": ["x"], "characters": "Actor1"}', "'characters' must be a list"),
        ("42", "expected a JSON list"),
    ],
)
def test_malformed_prompt_files_fail_with_a_message(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(PromptFileError, match=message):
        load_prompts(path)
