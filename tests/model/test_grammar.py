"""Tests of `model/grammar.py`: xgrammar as a transformers logits processor."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from curation.captions import reply_schema
from model.grammar import JsonSchemaLogits
from model.tiny import build_tiny_captioner
from tests.support.captioner import valid_reply


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return AutoTokenizer.from_pretrained(build_tiny_captioner(tmp_path_factory.mktemp("qwen")))


def allowed(processor, input_ids, vocab: int) -> list[int]:
    return torch.isfinite(processor(input_ids, torch.zeros(len(input_ids), vocab))[0]).nonzero().flatten().tolist()


def test_each_row_may_only_continue_a_document_of_the_schema_then_stop(tokenizer):
    vocab, stop = len(tokenizer), tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = tokenizer(valid_reply(2), add_special_tokens=False)["input_ids"]
    grammar = JsonSchemaLogits(tokenizer, reply_schema(2), 1, vocab, [stop])
    prompt = torch.tensor([[1, 5, 6]])
    for step, token in enumerate(ids):
        assert token in allowed(grammar, torch.cat([prompt, torch.tensor([ids[:step]], dtype=torch.long)], 1), vocab)
    assert allowed(grammar, torch.cat([prompt, torch.tensor([ids])], 1), vocab) == [stop]  # complete: only the end


def test_a_reply_with_the_wrong_number_of_shots_cannot_be_written(tokenizer):
    vocab, stop = len(tokenizer), tokenizer.convert_tokens_to_ids("<|im_end|>")
    one_shot = tokenizer(valid_reply(1), add_special_tokens=False)["input_ids"]
    grammar = JsonSchemaLogits(tokenizer, reply_schema(2), 1, vocab, [stop])
    prompt = torch.tensor([[1, 5, 6]])
    refused = next(step for step, token in enumerate(one_shot)
                   if token not in allowed(grammar, torch.cat([prompt, torch.tensor([one_shot[:step]], dtype=torch.long)], 1), vocab))  # fmt: skip
    assert tokenizer.decode(one_shot[refused:]).startswith("]")  # closing the shots after one: refused
    assert tokenizer.decode(one_shot[:refused]).endswith('shot 1."')
