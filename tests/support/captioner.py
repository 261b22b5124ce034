"""A tiny Qwen-VL captioner folder for the local-captioner tests, and logits processors that force a
known reply through the real generation path (grammar included). Importable by Ray workers."""

from __future__ import annotations

import json
import os
import re

import torch

REPLY_CHARACTERS = [{"name": "Actor1", "description": "a young man in a red coat"}]


def valid_reply(num_shots: int) -> str:
    """A reply that keeps every caption rule, for `num_shots` shots (json.dumps spacing: the grammar's)."""
    shots = [f"Actor1 (a young man in a red coat) walks slowly through the room in shot {i + 1}." for i in
             range(num_shots)]  # fmt: skip
    return json.dumps({"characters": REPLY_CHARACTERS, "background": "A quiet grey room at night.", "shots": shots})


def rule_breaking_reply(num_shots: int) -> str:
    """Well-formed JSON of the schema that breaks the rules (an undefined character, 'they')."""
    shots = [f"Actor2 and they walk through the room in shot {i + 1}." for i in range(num_shots)]
    return json.dumps({"characters": REPLY_CHARACTERS, "background": "A quiet grey room.", "shots": shots})


class ForceReply:
    """A logits processor: each row's reply is `reply(num_shots)`, the shots counted from the vision
    blocks of its prompt, then the end-of-turn token. Everything else gets -inf."""

    def __init__(self, folder, reply=valid_reply):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.reply = reply
        self.targets: list[list[int]] | None = None
        self.start = 0

    def __call__(self, input_ids, scores):
        if self.targets is None:
            start = self.tokenizer.convert_tokens_to_ids("<|vision_start|>")
            end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
            self.start = input_ids.shape[1]
            self.targets = []
            for row in input_ids.tolist():
                blocks = sum(1 for a, b in zip(row, row[1:]) if b == start and a != start)
                shots = self._shots(row, blocks)
                ids = self.tokenizer(self.reply(shots), add_special_tokens=False)["input_ids"]
                self.targets.append([*ids, end])
        step = input_ids.shape[1] - self.start
        forced = torch.full_like(scores, float("-inf"))
        for row, target in enumerate(self.targets):
            forced[row, target[min(step, len(target) - 1)]] = 0.0
        return scores + forced

    def _shots(self, row: list[int], blocks: int) -> int:
        label = re.search(r"Shot \d+ of (\d+)", self.tokenizer.decode(row))
        return int(label.group(1)) if label else blocks


class Forcing:
    """What LocalCaptionRemote takes as `logits_processors`: a fresh ForceReply per generate call."""

    def __init__(self, folder, reply=valid_reply):
        self.folder, self.reply = str(folder), reply

    def __call__(self, batch: int) -> list:
        return [ForceReply(self.folder, self.reply)]


def forcing_stage(reply=valid_reply, crash_marker: str | None = None):
    """A LocalCaptionRemote class for the job's `swap`: forces `reply`, and with `crash_marker` (a file
    path) kills its actor on every batch while that file exists."""
    from curation.local_captioner import LocalCaptionRemote

    class Forced(LocalCaptionRemote):
        def __init__(self, settings, gpus: float = 0.0):
            super().__init__(settings, gpus, logits_processors=Forcing(settings.local.model, reply))

        def process(self, items):
            if crash_marker and os.path.exists(crash_marker):
                os._exit(1)  # the actor is gone, as after an OOM kill
            return super().process(items)

    return Forced
