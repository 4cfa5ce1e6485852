"""Texts that a compressor trusted with arbitrary input must give back byte for byte: line endings,
invisible characters, normalisation forms, scripts, sizes. Every entry point is tested on them
(tests/test_bytes_exact.py on the tiny models, a few on SmolLM2 in test_integration_model.py)."""

from __future__ import annotations

import unicodedata

EDGE_TEXTS: dict[str, str] = {
    "crlf": "line one\r\nline two\r\n",
    "lone_cr": "old mac\rline\rends",
    "tabs": "\tcol1\tcol2\t\tend",
    "outer_spaces": "   leading and trailing   ",
    "bom": "\ufeffa file that starts with a BOM",
    "nfc": unicodedata.normalize("NFC", "café crème brûlée"),
    "nfd": unicodedata.normalize("NFD", "café crème brûlée"),
    "emoji_zwj": "family 👩\u200d👩\u200d👧\u200d👦, thumbs 👍🏽👍🏿, flag 🏳️\u200d🌈",
    "cjk": "東京は日本の首都です。中文，한국어",
    "rtl": "שלום עולם, مرحبا بالعالم \u200fend",
    "combining": "Z\u0337\u0322a\u0338l\u0335g\u0336o and e\u0301\u0302",
    "controls": "bell\x07 esc\x1b[0m del\x7f vt\x0b ff\x0c",
    "nul": "before\x00after\x00",
    "long_word": "supercalifragilistic" * 15,  # one 300-character word
    "one_char": "A",
    "whitespace_only": " \t\r\n \u00a0\u3000",
    "invoice": "INV-2026-0042;  Qty 3 × €19.99 = €59.97\t(VAT 20%)\r\n",
}

assert len(EDGE_TEXTS["long_word"]) == 300
assert EDGE_TEXTS["nfc"] != EDGE_TEXTS["nfd"]


def chunk_texts(lm, chunk_tokens: int) -> dict[str, str]:
    """A text of exactly `chunk_tokens` tokens and one of a token more, for this model's tokenizer
    (built from a word list until the count is exact)."""
    words, out = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "and", "runs", "far", "away"], {}
    for name, target in (("chunk_exact", chunk_tokens), ("chunk_plus_one", chunk_tokens + 1)):
        text = ""
        i = 0
        while len(lm.tokenize(text)) < target:
            text += ("" if not text else " ") + words[i % len(words)]
            i += 1
        while len(lm.tokenize(text)) > target:  # a multi-token last word: trim characters
            text = text[:-1]
        assert len(lm.tokenize(text)) == target, (name, text)
        out[name] = text
    return out
