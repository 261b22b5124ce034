"""Replies held to a JSON schema while they are generated: xgrammar's matcher as a transformers
logits processor.

Why xgrammar: it runs on CPU (its token masks are applied to CPU or GPU logits alike), it plugs
into transformers as a plain logits processor, and it is vLLM's default structured-output backend,
so the transformers and vLLM engines of the local captioner hold replies to one grammar engine.
One compiler per tokenizer; it caches each schema's compiled grammar.
"""

from __future__ import annotations

import functools
import json


@functools.lru_cache(maxsize=8)
def _compiler(tokenizer, vocab_size: int, stop_ids: tuple[int, ...]):
    import xgrammar as xgr

    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_ids))
    return xgr.GrammarCompiler(info, max_threads=1)


def _compiled(compiler, schema_text: str):
    # no free whitespace between JSON tokens: a model cannot spend its token budget on blank lines.
    # The compiler caches what it compiled: a batch of replies to one schema compiles once.
    return compiler.compile_json_schema(schema_text, any_whitespace=False)


class JsonSchemaLogits:
    """A transformers LogitsProcessor: each row of the batch may only produce tokens that keep its
    reply a prefix of a JSON document of `schema`, then an end token."""

    def __init__(self, tokenizer, schema: dict, batch: int, vocab_size: int, stop_ids: list[int]):
        import xgrammar as xgr

        self.xgr = xgr
        compiler = _compiler(tokenizer, vocab_size, tuple(stop_ids))
        grammar = _compiled(compiler, json.dumps(schema))  # key order kept: properties come in schema order
        self.matchers = [xgr.GrammarMatcher(grammar) for _ in range(batch)]
        self.bitmask = xgr.allocate_token_bitmask(batch, vocab_size)
        self.prompt_length: int | None = None

    def __call__(self, input_ids, scores):
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        elif input_ids.shape[1] > self.prompt_length:  # the token each row chose at the previous step
            for row, matcher in enumerate(self.matchers):
                if not matcher.is_terminated():
                    token = int(input_ids[row, -1])
                    if not matcher.accept_token(token):
                        raise RuntimeError(f"the grammar refused token {token} it had allowed (row {row})")
        for row, matcher in enumerate(self.matchers):
            if matcher.is_terminated():
                self.bitmask[row].fill_(-1)  # a finished row is padded by generate; any token will do
            else:
                matcher.fill_next_token_bitmask(self.bitmask, row)
        self.xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device), vocab_size=scores.shape[-1])
        return scores
