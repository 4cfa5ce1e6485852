"""The experiments' texts, offline and deterministic for a given seed.

- `random`: words drawn uniformly from the GloVe top-100k vocabulary (the paper's random texts);
- `prose`: public-domain novel passages shipped in `prototok/data/prose.jsonl` (stands in for PG-19);
- `generated`: for each prose context, a continuation of the same token length sampled from the
  model under test at temperature 1 (the paper's "PG-19 generated");
- `file:PATH` (or just an existing PATH): the user's texts, one per line, or a folder of .txt files.

Each text comes with its token ids under the model being tested; experiments cut prefixes of
those ids, so nothing depends on the tokenizer round-tripping a prefix.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch

from ..errors import InvalidInput
from ..models import LanguageModel

DATASETS = ("random", "prose", "generated", "file")


@dataclass
class Text:
    text: str
    ids: list[int]  # the model's token ids; `generated` keeps the sampled ids exactly
    source: str  # where it came from, e.g. "prose:1342#3" or "generated:prose:1342#3"


def load(lm: LanguageModel, dataset: str, n: int, min_tokens: int, seed: int = 0) -> list[Text]:
    """n texts of at least `min_tokens` tokens (file texts: as they are)."""
    if n < 1:
        raise InvalidInput("--texts must be >= 1")
    if dataset == "random":
        return random_texts(lm, n, min_tokens, seed)
    if dataset == "prose":
        return prose_texts(lm, n, min_tokens, seed)
    if dataset == "generated":
        return [Text(lm.detokenize(c[0]), c[0], "generated:" + ctx.source)
                for ctx, c in zip(*contexts_and_continuations(lm, n, min_tokens, 1, seed))]
    path = Path(dataset.removeprefix("file:"))
    if dataset.startswith("file:") or path.exists():
        return file_texts(lm, path, n)
    raise InvalidInput(f"unknown dataset '{dataset}' (choose from random, prose, generated, file:PATH)")


@lru_cache(maxsize=1)
def glove_words() -> list[str]:
    return resources.files("prototok").joinpath("data/glove_top100k_words.txt").read_text().split()


@lru_cache(maxsize=1)
def passages() -> list[dict]:
    lines = resources.files("prototok").joinpath("data/prose.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def random_texts(lm: LanguageModel, n: int, min_tokens: int, seed: int) -> list[Text]:
    rng, words = random.Random(seed), glove_words()
    out = []
    for i in range(n):
        text = " ".join(rng.choice(words) for _ in range(max(1, min_tokens)))  # every word is >= 1 token
        out.append(Text(text, lm.tokenize(text), f"random:{seed}#{i}"))
    return out


def prose_texts(lm: LanguageModel, n: int, min_tokens: int, seed: int) -> list[Text]:
    """Passages picked by seed; a passage shorter than min_tokens runs on into the next ones of its book."""
    rows = passages()
    if n > len(rows):
        raise InvalidInput(f"the prose dataset has {len(rows)} passages; asked for {n}")
    out = []
    for start in random.Random(seed).sample(range(len(rows)), n):
        book = [i for i, r in enumerate(rows) if r["book"] == rows[start]["book"]]
        k, parts = book.index(start), []
        while True:
            parts.append(rows[book[k % len(book)]]["text"])
            ids = lm.tokenize("\n\n".join(parts))
            if len(ids) >= min_tokens or len(parts) == len(book):
                break
            k += 1
        out.append(Text("\n\n".join(parts), ids, f"prose:{rows[start]['book']}#{start}"))
    return out


def file_texts(lm: LanguageModel, path: Path, n: int) -> list[Text]:
    """The first n texts of a file (one per line) or of a folder's .txt files (sorted by name)."""
    if path.is_dir():
        texts = [p.read_text(encoding="utf-8") for p in sorted(path.glob("*.txt"))]
    elif path.is_file():
        texts = path.read_text(encoding="utf-8").splitlines()
    else:
        raise InvalidInput(f"no such file or folder: {path}")
    texts = [t for t in texts if t.strip()][:n]
    if not texts:
        raise InvalidInput(f"no texts in {path}")
    return [Text(t, lm.tokenize(t), f"file:{path.name}#{i}") for i, t in enumerate(texts)]


def contexts_and_continuations(lm: LanguageModel, n: int, n_tokens: int, k: int,
                               seed: int) -> tuple[list[Text], list[list[list[int]]]]:
    """n prose contexts cut to n_tokens, and k sampled continuations of n_tokens each."""
    if 2 * n_tokens > lm.max_length:
        raise InvalidInput(f"context plus continuation ({2 * n_tokens} tokens) exceed the model's context")
    contexts = []
    for t in prose_texts(lm, n, n_tokens, seed):
        ids = t.ids[:n_tokens]
        contexts.append(Text(lm.detokenize(ids), ids, t.source))
    return contexts, [sample(lm, c.ids, n_tokens, k, seed * 1_000_003 + i) for i, c in enumerate(contexts)]


@torch.inference_mode()
def sample(lm: LanguageModel, context: list[int], n_tokens: int, k: int, seed: int) -> list[list[int]]:
    """k continuations of exactly n_tokens: multinomial sampling at temperature 1, no top-k/top-p."""
    x = torch.tensor([context] * k, device=lm.device)  # (k, C)
    with torch.random.fork_rng(devices=[lm.device] if lm.device.type == "cuda" else []):
        torch.manual_seed(seed)
        out = lm.model.generate(
            input_ids=x, attention_mask=torch.ones_like(x), do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
            max_new_tokens=n_tokens, min_new_tokens=n_tokens,  # no early EOS: every continuation is n_tokens
            pad_token_id=lm.tokenizer.eos_token_id, eos_token_id=lm.tokenizer.eos_token_id,
        )  # (k, C + n_tokens)
    return out[:, len(context):].tolist()
