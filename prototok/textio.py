"""Texts in and out, byte for byte: what every entry point uses so that a decode gives back
exactly the bytes that went into the encode.

A text enters as UTF-8 bytes (a file, a request body) or as a Python string (an argument, a
JSON field). Files are read as bytes and decoded strictly: no newline translation, the BOM
kept, NUL and other control characters kept. A string must be encodable as UTF-8 (no lone
surrogates, which a command-line argument of invalid UTF-8 or a JSON `\\ud800` escape can
carry). Decoded texts are written back as their UTF-8 bytes, nothing added.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import EmptyText, InvalidInput


def text_from_bytes(blob: bytes, source: str = "text") -> str:
    """The text of UTF-8 bytes, exactly (a BOM stays, as U+FEFF); InvalidInput naming the byte offset."""
    try:
        return blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{source} is not UTF-8 text (byte {exc.start}: {blob[exc.start:exc.start + 4]!r})") from exc


def read_text_file(path: Path) -> str:
    """A file's text, its bytes decoded strictly as UTF-8 (never in text mode, which translates newlines)."""
    if not path.is_file():
        raise InvalidInput(f"no such file: {path}")
    text = text_from_bytes(path.read_bytes(), str(path))
    if not text:
        raise EmptyText(f"{path} is empty")
    return text


def check_unicode(text: str, source: str = "text") -> str:
    """The text, if it is valid Unicode (UTF-8 encodable); InvalidInput naming the first bad character."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{source} is not valid Unicode: a lone surrogate {text[exc.start]!r} at character "
                           f"{exc.start} (from bytes that are not UTF-8?)") from exc
    return text


def first_difference(a: str, b: str) -> int:
    """The first character index where two strings differ (the shorter one's length if one is a prefix)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def utf8(text: str) -> bytes:
    """The bytes a decoded text is written as: UTF-8, nothing added or translated."""
    return text.encode("utf-8")


def write_text_file(path: Path, text: str) -> Path:
    """Write exactly the text's UTF-8 bytes, beside the target first, then rename (never half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_bytes(utf8(text))
    os.replace(tmp, path)
    return path
