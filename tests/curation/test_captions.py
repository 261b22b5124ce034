"""Tests of `curation/captions.py`: what a caption is: the prompt, the reply schema and every rule a
reply must keep (the language check included). Pure functions of the reply; asking Gemini for it
is `curation.gemini`."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "caption",
    ["Actor1 (a man) nods.", "Actor1 sits.", "Actor1 (a dog) barks.", "A red tram passes.",
     "Actor1 (a nun in a black habit) prays.", "Actor1 (a chef) cuts onions."],
)  # fmt: skip
def test_short_english_captions_with_actor_names_pass_the_language_check(caption):
    from curation.captions import is_english

    assert is_english(caption)


@pytest.mark.parametrize(
    "caption",
    ["Actor1 (un homme grand en manteau gris) entre dans la pièce et regarde autour de lui.",
     "Actor1 (un hombre alto con abrigo gris) camina hacia la puerta de la casa.",
     "Actor1 (ein großer Mann im grauen Mantel) geht langsam in den dunklen Raum."],
)  # fmt: skip
def test_other_languages_fail_the_language_check(caption):
    from curation.captions import is_english

    assert not is_english(caption)
