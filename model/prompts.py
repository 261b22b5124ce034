"""Prompt files for generation and evaluation: a JSON list of prompts, a scene description
({background, characters, scenes}, the paper's evaluation format), or one story of a list of them.
Every "ActorK" in a scene becomes "ActorK (description)" and the background is appended."""

from __future__ import annotations

import json
import re
from pathlib import Path


class PromptFileError(ValueError):
    """A prompt file that is neither a JSON list of prompts nor a scene description."""


def load_prompts(path: str | Path, story: str | None = None) -> list[str]:
    """Prompts from a JSON list of prompts, a scene description, or (with `story`) one story of a
    list of scene descriptions such as training/eval_prompts.json (by its id or index)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise PromptFileError(f"{path}: prompt file not found") from err
    except IsADirectoryError as err:
        raise PromptFileError(f"{path}: is a folder; give a JSON prompt file") from err
    except UnicodeDecodeError as err:
        raise PromptFileError(f"{path}: not UTF-8 text (byte {err.start} cannot be decoded); save it as UTF-8") from err
    except json.JSONDecodeError as err:
        raise PromptFileError(
            f"{path}: not valid JSON ({err}); expected a list of prompts or a scene description"
        ) from err
    if isinstance(data, list) and data and all(isinstance(e, dict) for e in data):
        ids = [str(e.get("id", i)) for i, e in enumerate(data)]
        if story is None or story not in ids + [str(i) for i in range(len(data))]:
            raise PromptFileError(f"{path} holds {len(data)} stories; pick one with --story ({', '.join(ids[:10])})")
        index = ids.index(story) if story in ids else int(story)
        return scene_prompts(data[index], f"{path} story {story}")
    if isinstance(data, list):
        if not data or not all(isinstance(p, str) and p.strip() for p in data):
            raise PromptFileError(f"{path}: a prompt list must hold one non-empty string per scene")
        return [p.strip() for p in data]
    if isinstance(data, dict):
        return scene_prompts(data, str(path))
    raise PromptFileError(
        f"{path}: expected a JSON list of prompts or an object with 'scenes', got {type(data).__name__}"
    )


def scene_prompts(spec: dict, where: str = "scene description") -> list[str]:
    """Prompts from {background, characters, scenes}: each ActorK gets its description, every time."""
    scenes = spec.get("scenes")
    if not isinstance(scenes, list) or not scenes:
        raise PromptFileError(f"{where}: 'scenes' must be a non-empty list of scene descriptions")
    characters = spec.get("characters", [])
    if isinstance(characters, dict):
        characters = [{"name": k, "description": v} for k, v in characters.items()]
    if not isinstance(characters, list) or not all(
        isinstance(c, dict) and {"name", "description"} <= c.keys() for c in characters
    ):
        raise PromptFileError(f"{where}: 'characters' must be a list of {{'name': 'Actor1', 'description': ...}}")
    for i, c in enumerate(characters):
        if not isinstance(c["name"], str) or not isinstance(c["description"], str) or not c["description"].strip():
            raise PromptFileError(f"{where}: character {i} ({c['name']!r}) needs a name and a non-empty description "
                                  f"text, got description {c['description']!r}")  # fmt: skip
    described = {c["name"]: c["description"].strip() for c in characters}
    background = spec.get("background") or ""
    if not isinstance(background, str):
        raise PromptFileError(f"{where}: 'background' must be text, got {type(background).__name__}")
    background = background.strip()
    prompts = []
    for i, scene in enumerate(scenes):
        text = scene.get("description") if isinstance(scene, dict) else scene
        if not isinstance(text, str) or not text.strip():
            raise PromptFileError(f"{where}: scene {i} has no description")
        unknown = sorted(set(re.findall(r"\bActor\d+\b", text)) - described.keys())
        if unknown:
            raise PromptFileError(f"{where}: scene {i} names {', '.join(unknown)}, which 'characters' does not define")
        # "Actor1" -> "Actor1 (description)", unless the description is already there.
        text = re.sub(r"\b(Actor\d+)\b(?!\s*\()", lambda m: f"{m.group(1)} ({described[m.group(1)]})", text.strip())
        prompts.append(f"{text} {background}".strip() if background else text)
    return prompts
