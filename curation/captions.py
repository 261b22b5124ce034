"""What a caption is: the prompt, the reply schema and every rule a reply must keep (the language
check included). Pure functions of the reply; asking Gemini for it is `curation.gemini`.

One request per combination asks for the characters (Actor1, Actor2, ... with one short appearance
description each), the shared background and one description per shot, every mention written as
"ActorK (description)" with the description repeated verbatim. A reply that breaks a rule is
re-asked with the reasons (bounded), then recorded as `invalid`.
"""

from __future__ import annotations

import functools
import re

from pydantic import BaseModel, Field

PROMPT_VERSION = "v1"  # part of every cached reply's key: change it when the prompt or the rules change
SYSTEM_PROMPT = """You write training captions for a multi-shot video generation model.
You are shown {n} shot(s) from one film, in order. Describe them as one consistent scene:
1. characters: every person (or animal) that appears, named Actor1, Actor2, ... in order of first
   appearance, each with ONE short appearance description (age, gender, clothing, hair, build)
   that identifies them across shots. Use no proper names.
2. background: one sentence describing the shared place and lighting.
3. shots: exactly {n} description(s), one per shot, in order, each 1-3 sentences of what is
   visible and happening. Every time a character is mentioned write "ActorK (description)" with
   the description copied word for word from the characters list. Never refer to characters as
   "they", "them", "we" or "us"; name them. Write in English."""

PLACEHOLDERS = re.compile(r"\b(they|them|their|we|us|our)\b", re.IGNORECASE)
ACTOR = re.compile(r"\bActor(\d+)\b")
SPACES = re.compile(r"\s*")


class Character(BaseModel):
    name: str = Field(description="Actor1, Actor2, ... in order of first appearance")
    description: str = Field(description="short appearance description, repeated verbatim in every shot")


class CaptionReply(BaseModel):
    """The response_schema Gemini fills in."""

    characters: list[Character]
    background: str
    shots: list[str] = Field(description="one description per shot, in order")


def reply_schema(num_shots: int) -> dict:
    """CaptionReply's JSON schema with exactly `num_shots` shot descriptions: the grammar a local
    model's reply is decoded under (Gemini gets CaptionReply itself as its response_schema)."""
    schema = CaptionReply.model_json_schema()
    schema["properties"]["shots"].update(minItems=num_shots, maxItems=num_shots)
    return schema


def validate_reply(reply: CaptionReply, num_shots: int) -> list[str]:
    """Every rule the reply breaks, as sentences that can be sent back to the model."""
    problems = []
    if len(reply.shots) != num_shots:
        problems.append(
            f"there are {num_shots} shots but {len(reply.shots)} shot descriptions; give exactly {num_shots}"
        )
    if not reply.background.strip():
        problems.append("the background is empty")
    described = {}
    for character in reply.characters:
        if not re.fullmatch(r"Actor\d+", character.name):
            problems.append(f"character name {character.name!r} must be Actor1, Actor2, ...")
        elif character.name in described:
            problems.append(f"{character.name} is defined twice")
        elif not character.description.strip():
            problems.append(f"{character.name} has no description")
        described[character.name] = character.description.strip()
    for index, text in enumerate(reply.shots, start=1):
        for match in ACTOR.finditer(text):
            name = match.group(0)
            if name not in described:
                problems.append(f"shot {index} mentions {name}, who is not in the characters list")
                continue
            after = SPACES.match(text, match.end()).end()  # no copy of the rest per mention: linear in the text
            if not text.startswith(f"({described[name]})", after):
                problems.append(
                    f"shot {index}: {name} must be followed by its exact description in parentheses: "
                    f"'{name} ({described[name]})'"
                )
        if found := PLACEHOLDERS.findall(text):
            problems.append(f"shot {index} uses {sorted({w.lower() for w in found})}; name the characters instead")
        if not is_english(text):
            problems.append(f"shot {index} is not in English")
    if not is_english(" ".join([reply.background, *(c.description for c in reply.characters), *reply.shots])):
        problems.append("the reply is not in English")
    return list(dict.fromkeys(problems))


@functools.cache
def _language_identifier():
    # py3langid ships its model in the wheel: nothing is downloaded. Loading takes ~0.7 s, once.
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def is_english(text: str, confidence: float = 0.5) -> bool:
    """False only when a language identifier is confident the text is another language.

    Character names (Actor1, ...) are removed first. Short captions give the identifier little to
    go on, so an unsure verdict counts as English: the rule must reject French or Russian replies,
    never a terse English one. Text in non-Latin scripts is judged by the identifier the same way.
    """
    text = ACTOR.sub(" ", text).strip()
    if not any(c.isalpha() for c in text):
        return True
    ranked = dict(_language_identifier().rank(text))
    top = max(ranked, key=ranked.get)
    return top == "en" or ranked[top] < confidence or ranked.get("en", 0.0) >= 0.05


# USD per million tokens (prompt, output including thinking), paid tier, prompts up to 200k tokens,
# as Google published them; image and video input bill as prompt tokens. `--gemini-price` overrides.


REASK_EXCERPT = 4000  # characters of a bad reply (and of its problems) quoted back in a re-ask


def excerpt(text: str, limit: int) -> str:
    """text, or its head and tail around a note of what was cut when it is longer than `limit`."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} [... {len(text) - 2 * half} characters cut ...] {text[-half:]}"
