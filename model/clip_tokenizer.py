"""CLIP's tokenizer for ViCLIP text, built from the merges file that ships with the checkpoints.

The file is `bpe_simple_vocab_16e6.txt.gz` (a header line, then one merge per line). Nothing is
downloaded. The vocabulary is numbered exactly as the official CLIP/ViCLIP `SimpleTokenizer` does:
the 256 byte symbols in its `bytes_to_unicode` order (printable bytes first), the same with the
end-of-word marker, one symbol per merge line, then <|startoftext|> and <|endoftext|> (the largest
id, which the text tower pools on). Tokenization itself is transformers' `CLIPTokenizer` over that
vocabulary; text is cleaned first as the official code does (ftfy, HTML unescape).
"""

from __future__ import annotations

import functools
import gzip
import html
import os

import torch

_CLIP_MERGE_LINES = 49152 - 256 - 2  # merge lines CLIP takes from the file, after the header
SOT, EOT = "<|startoftext|>", "<|endoftext|>"


@functools.cache
def byte_symbols() -> dict[int, str]:
    """CLIP's reversible byte -> printable character map, in CLIP's order: printable bytes keep their
    own character and come first; the others get characters from 256 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def _clean(text: str) -> str:
    """The official basic clean-up; whitespace folding and lower-casing are the tokenizer's normaliser."""
    import ftfy

    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


class ClipBPETokenizer:
    """ViCLIP's text tokenizer: `encode` ids and `encode_batch` padded (B, context_length) tensors."""

    def __init__(self, merges_path: str | os.PathLike):
        from transformers import CLIPTokenizer

        try:
            with gzip.open(merges_path, "rt", encoding="utf-8") as f:
                lines = f.read().split("\n")
        except (OSError, EOFError, UnicodeDecodeError) as err:
            raise ValueError(f"{merges_path}: cannot read the CLIP BPE merges file ({err}); it is "
                             "bpe_simple_vocab_16e6.txt.gz, shipped with the checkpoint") from err  # fmt: skip
        # Every line in the official slice takes an id (a short file's trailing blank line included),
        # so ids match the official tokenizer for any merges file, not only the released one.
        merge_lines = [tuple(line.split()) for line in lines[1 : _CLIP_MERGE_LINES + 1]]
        base = list(byte_symbols().values())
        vocab = [*base, *(s + "</w>" for s in base), *("".join(m) for m in merge_lines), SOT, EOT]
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.sot, self.eot = self.encoder[SOT], self.encoder[EOT]
        merges = [m for m in merge_lines if len(m) == 2]
        self._tokenizer = CLIPTokenizer(vocab=self.encoder, merges=merges)

    def __len__(self) -> int:
        return len(self.encoder)

    def encode(self, text: str) -> list[int]:
        """Token ids without <sot>/<eot>. A literal <|endoftext|> in the text is the EOT token, as officially."""
        return self._tokenizer(_clean(text), add_special_tokens=False)["input_ids"]

    def encode_batch(self, texts: list[str], context_length: int) -> tuple[torch.Tensor, list[bool]]:
        """(B, context_length) ids: <sot> tokens <eot>, zero-padded; over-long texts are truncated
        (keeping <eot> last) and flagged True in the returned list."""
        tokens = torch.zeros(len(texts), context_length, dtype=torch.long)
        truncated = []
        for row, text in enumerate(texts):
            ids = [self.sot, *self.encode(text), self.eot]
            truncated.append(len(ids) > context_length)
            if truncated[-1]:
                ids = ids[:context_length]
                ids[-1] = self.eot
            tokens[row, : len(ids)] = torch.tensor(ids)
        return tokens, truncated
