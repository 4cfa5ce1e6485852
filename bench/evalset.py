"""The frozen evaluation set: texts that no tuning, no warm start and no training has seen.

bench/data/eval.jsonl, one JSON object a line: `id`, `kind`, `text`, `source`. Kinds:
- `prose`: one sentence (60-140 characters) each from the 70 passages of
  ../shared/data/prose/gutenberg_chunks.jsonl that prototok/data/prose.jsonl does not ship
  (passages 21-30 of each of its seven novels): the recipe was tuned on bench/sentences.py and
  passages 100+ of the shipped file, and the warm start learnt on shipped passages 0-31;
- `passage`: a whole-word excerpt of about 300 characters from those same held-out passages;
- `random`: 12 words drawn uniformly (seed 2026) from the GloVe list, as the paper's random texts;
- `mixed`: real-world lines written for this set: code, JSON, numbers and dates, other
  languages and scripts, emoji, a URL, CSV.

Frozen: `load()` reads the committed file; `python -m bench.evalset --build` wrote it once
(2026-12-03) and refuses to overwrite it. Report speed and quality claims on it.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

FILE = Path(__file__).parent / "data" / "eval.jsonl"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

MIXED = [
    "def area(r: float) -> float:\n    return 3.14159 * r ** 2",
    '{"id": 1842, "name": "Ada Lovelace", "tags": ["math", "engines"], "active": false}',
    "for (let i = 0; i < rows.length; i++) { total += rows[i].price * rows[i].qty; }",
    "SELECT city, COUNT(*) AS n FROM visits WHERE day >= '2024-03-01' GROUP BY city;",
    "Invoice 2024-117: 3 x 12.50 EUR = 37.50 EUR, due 15/04/2024 (net 30).",
    "The meeting moved from 09:30 to 14:15 on Thursday, 7 November 2024.",
    "Population: 8,336,817 (2020); area 783.8 km2; density 10,636/km2.",
    "Le train de 18 h 42 pour Lyon partira avec vingt minutes de retard.",
    "Die Bibliothek bleibt am Montag wegen Renovierungsarbeiten geschlossen.",
    "El mercado abre a las ocho y cierra cuando se vende el último pan.",
    "Поезд прибывает на второй путь через пять минут.",
    "今日は雨が降っているので、図書館で本を読みます。",
    "我们明天早上八点在火车站见面。",
    "سأرسل لك الملف قبل نهاية الأسبوع.",
    "Launch went fine 🚀 — thanks team 🙌🏽, drinks on Friday 🍻",
    "https://example.org/search?q=proto+tokens&page=2#results",
    "name,age,city\nAlice,34,Lisbon\nBob,29,Oslo",
]


def load(kind: str | None = None) -> list[dict]:
    """The set's entries (of one kind, if given), in file order."""
    rows = [json.loads(line) for line in FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if kind is None or r["kind"] == kind]


def texts(kind: str, n: int | None = None) -> list[str]:
    return [r["text"] for r in load(kind)][:n]


def _held_out_passages() -> list[dict]:
    shipped = Path(__file__).resolve().parents[1] / "prototok" / "data" / "prose.jsonl"
    seen = {json.loads(line)["text"][:200] for line in shipped.read_text(encoding="utf-8").splitlines()}
    every = (SHARED / "prose" / "gutenberg_chunks.jsonl").read_text(encoding="utf-8").splitlines()
    return [p for p in map(json.loads, every) if p["text"][:200] not in seen]


def _sentence(text: str) -> str | None:
    for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
        if 60 <= len(s) <= 140 and "_" not in s:
            return s
    return None


def _excerpt(text: str, chars: int = 300) -> str:
    words, out = " ".join(text.split()).split(" "), ""
    for w in words:
        if len(out) + len(w) + 1 > chars:
            break
        out = f"{out} {w}".strip()
    return out


def build() -> list[dict]:
    held = _held_out_passages()
    rows = []
    for i, p in enumerate(held):
        s = _sentence(p["text"])
        if s:
            rows.append({"id": f"prose-{i:02d}", "kind": "prose", "text": s, "source": f"gutenberg #{p['book']}"})
    for i, p in enumerate(held[::5]):
        rows.append({"id": f"passage-{i:02d}", "kind": "passage", "text": _excerpt(p["text"]),
                     "source": f"gutenberg #{p['book']}"})
    words = (SHARED / "glove_top100k_words.txt").read_text(encoding="utf-8").split()
    rng = random.Random(2026)
    for i in range(16):
        rows.append({"id": f"random-{i:02d}", "kind": "random", "text": " ".join(rng.choice(words) for _ in range(12)),
                     "source": "glove top 100k, uniform, seed 2026"})
    for i, text in enumerate(MIXED):
        rows.append({"id": f"mixed-{i:02d}", "kind": "mixed", "text": text, "source": "written for this set"})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", action="store_true", help="write bench/data/eval.jsonl (only if it does not exist)")
    args = ap.parse_args()
    if not args.build:
        for kind in ("prose", "passage", "random", "mixed"):
            print(kind, len(load(kind)))
        return
    if FILE.exists():
        raise SystemExit(f"{FILE} exists: the evaluation set is frozen")
    FILE.parent.mkdir(parents=True, exist_ok=True)
    FILE.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in build()), encoding="utf-8")
    print(f"wrote {FILE}")


if __name__ == "__main__":
    main()
