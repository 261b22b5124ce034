"""CLIP's byte-level BPE tokenizer, read from the merges file that ships with CLIP/ViCLIP checkpoints.

The file is `bpe_simple_vocab_16e6.txt.gz` (a header line, then one merge per line). Nothing is
downloaded. Vocabulary: 256 byte symbols, the same with an end-of-word marker, one symbol per
merge, then <|startoftext|> and <|endoftext|> (the largest id, which the text tower pools on).
"""

from __future__ import annotations

import functools
import gzip
import html
import os

import regex
import torch

_WORDS = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE
)
_CLIP_MERGES = 49152 - 256 - 2  # merges CLIP uses from the file


@functools.cache
def _byte_symbols() -> dict[int, str]:
    """A reversible map from bytes to printable unicode characters (so BPE never sees whitespace/control)."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return symbols


def _clean(text: str) -> str:
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:  # ftfy only repairs mojibake; plain text tokenizes the same without it
        pass
    text = html.unescape(html.unescape(text))
    return regex.sub(r"\s+", " ", text).strip().lower()


class ClipBPETokenizer:
    def __init__(self, merges_path: str | os.PathLike):
        try:
            with gzip.open(merges_path, "rt", encoding="utf-8") as f:
                lines = f.read().split("\n")
        except (OSError, EOFError) as err:
            raise ValueError(f"{merges_path}: cannot read the CLIP BPE merges file ({err}); it is "
                             "bpe_simple_vocab_16e6.txt.gz, shipped with the checkpoint") from err  # fmt: skip
        merges = [tuple(line.split()) for line in lines[1 : _CLIP_MERGES + 1] if len(line.split()) == 2]
        base = list(_byte_symbols().values())
        vocab = base + [s + "</w>" for s in base] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.ranks = {merge: i for i, merge in enumerate(merges)}
        self.sot, self.eot = self.encoder["<|startoftext|>"], self.encoder["<|endoftext|>"]
        self._cache: dict[str, list[str]] = {}

    def __len__(self) -> int:
        return len(self.encoder)

    def _bpe(self, word: str) -> list[str]:
        if word in self._cache:
            return self._cache[word]
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = [(self.ranks.get(pair, float("inf")), i) for i, pair in enumerate(zip(parts, parts[1:]))]
            rank, i = min(pairs)
            if rank == float("inf"):
                break
            best = (parts[i], parts[i + 1])
            merged, j = [], 0
            while j < len(parts):  # merge every occurrence of the best pair, left to right
                if j < len(parts) - 1 and (parts[j], parts[j + 1]) == best:
                    merged.append(parts[j] + parts[j + 1])
                    j += 2
                else:
                    merged.append(parts[j])
                    j += 1
            parts = merged
        self._cache[word] = parts
        return parts

    def encode(self, text: str) -> list[int]:
        symbols = _byte_symbols()
        ids = []
        for word in _WORDS.findall(_clean(text)):
            word = "".join(symbols[b] for b in word.encode("utf-8"))
            ids += [self.encoder[piece] for piece in self._bpe(word)]
        return ids

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
