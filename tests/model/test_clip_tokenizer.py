"""Tests of `model/clip_tokenizer.py`: CLIP's tokenizer for ViCLIP text, built from the merges file
that ships with the checkpoints."""

from __future__ import annotations

import gzip

import pytest

from model.clip_tokenizer import ClipBPETokenizer, byte_symbols
from tests.support.viclip import TINY


def merge_word(word: list[str], pair: tuple[str, str]) -> list[str]:
    """Every occurrence of `pair` in `word` merged, left to right (one BPE merge step)."""
    out, j = [], 0
    while j < len(word):
        if j + 1 < len(word) and (word[j], word[j + 1]) == pair:
            out.append(word[j] + word[j + 1])
            j += 2
        else:
            out.append(word[j])
            j += 1
    return out


class OracleBPE:
    """CLIP's BPE written out from its definition, as the test's reference: byte symbols in CLIP's
    order, repeated lowest-rank pair merges, the official vocabulary numbering."""

    def __init__(self, lines):
        merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
        base = list(byte_symbols().values())
        vocab = base + [b + "</w>" for b in base] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
        self.ids = dict(zip(vocab, range(len(vocab))))
        self.ranks = {m: i for i, m in enumerate(merges)}

    def bpe(self, word):
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            rank, i = min((self.ranks.get(p, float("inf")), i) for i, p in enumerate(zip(parts, parts[1:])))
            if rank == float("inf"):
                break
            parts = merge_word(parts, (parts[i], parts[i + 1]))
        return parts

    def encode(self, text):
        import html

        import ftfy
        import regex

        text = regex.sub(r"\s+", " ", html.unescape(html.unescape(ftfy.fix_text(text))).strip()).strip().lower()
        pattern = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
        ids = []
        for word in regex.findall(pattern, text, regex.IGNORECASE):
            if word in ("<|startoftext|>", "<|endoftext|>"):
                ids.append(self.ids[word])
                continue
            symbols = "".join(byte_symbols()[b] for b in word.encode("utf-8"))
            ids += [self.ids[p] for p in self.bpe(symbols)]
        return ids


@pytest.fixture(scope="module")
def merges_file(tmp_path_factory):
    """A merges file learnt greedily from a small corpus, so real multi-step merges happen."""
    corpus = ("the man walks into the bar and the woman walks out . actor1 ( a tall man in a grey coat ) "
              "sits ; she laughs , he orders two drinks at 9 pm") * 3  # fmt: skip
    words = [list(w[:-1]) + [w[-1] + "</w>"] for w in corpus.split()]
    merges = []
    for _ in range(60):
        counts = {}
        for w in words:
            for pair in zip(w, w[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = max(counts, key=lambda p: (counts[p], p))
        merges.append(best)
        words = [merge_word(w, best) for w in words]
    path = tmp_path_factory.mktemp("bpe") / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return path


TEXTS = [
    "The man walks into the bar.",
    "Actor1 (a tall man in a grey coat) sits; she LAUGHS & he orders 2 drinks at 9pm!",
    "  café   naïve — “quoted” text &amp; HTML  ",
    "the man <|endoftext|> walks",
    "emoji 🎬 and 中文 characters",
    "",
]


def test_tokenizer_numbers_tokens_as_the_official_one(merges_file):
    tokenizer = ClipBPETokenizer(merges_file)
    oracle = OracleBPE(gzip.open(merges_file, "rt", encoding="utf-8").read().split("\n"))
    assert tokenizer.encoder == oracle.ids
    assert tokenizer.encoder["a</w>"] == 320 and tokenizer.encoder["!"] == 0  # printable bytes first
    for text in TEXTS:
        assert tokenizer.encode(text) == oracle.encode(text), text
    # A literal <|endoftext|> is the EOT token, so the text tower pools there (argmax), as officially.
    tokens, _ = tokenizer.encode_batch(["the man <|endoftext|> walks"], 16)
    assert int(tokens[0].argmax()) == 3


def test_bpe_tokenizer_merges_and_truncates_with_eot_last(bpe_file):
    tokenizer = ClipBPETokenizer(bpe_file)
    # 512 byte symbols, 10 merges, the file's trailing blank line (an id, as officially), 2 specials
    assert len(tokenizer) == 512 + 10 + 1 + 2 == TINY.vocab_size
    ids = tokenizer.encode("The man WALKS")
    assert ids == [tokenizer.encoder[t] for t in ("the</w>", "man</w>", "walks</w>")]
    tokens, truncated = tokenizer.encode_batch(["the man", "the man walks and the man walks and the man"], 8)
    assert truncated == [False, True]
    assert tokens[0].tolist()[:4] == [tokenizer.sot, ids[0], ids[1], tokenizer.eot] and tokens[0, 4:].eq(0).all()
    assert tokens[1, -1] == tokenizer.eot and tokens[1].argmax() == 7
