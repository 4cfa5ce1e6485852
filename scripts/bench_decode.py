"""Measure one-pass decode latency as the API runs it (`prototok.decode`, the model already loaded).

    python scripts/bench_decode.py [--model smollm2-135m-instruct] [--tokens 8 64 256] [--runs 20] [--threads 1]

Prints the median and p90 of `Decoded.seconds` per text length: the number behind the
results in bench/results/api-decode.md (docs/service/index.md, "Where decoding runs").
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from prototok import EncodeConfig, decode, encode_texts, load_model
from prototok.recipe import TUNED

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "wise", "owls", "quietly", "watch", "from", "old", "oak", "trees", "near", "the", "river", "bank", "and", "count", "the", "stars", "one", "by", "one", "until", "morning", "comes"]


def text_of(lm, n_tokens: int) -> str:
    words, text = [], ""
    while len(lm.tokenize(text)) < n_tokens:
        words.append(WORDS[len(words) % len(WORDS)])
        text = " ".join(words)
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tokens", type=int, nargs="+", default=[8, 64, 256])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    lm = load_model(args.model)
    print(f"model {lm.name} on {lm.device}, torch threads {torch.get_num_threads()}, "
          f"load {time.perf_counter() - t0:.1f} s")
    cfg = EncodeConfig(recipe=TUNED.with_(max_steps=1, seeds=1))  # vectors' quality does not change the cost
    for n in args.tokens:
        [enc] = encode_texts(lm, [text_of(lm, n)], cfg)
        decode(lm, [enc])  # warm-up
        times = sorted(decode(lm, [enc])[0].seconds * 1000 for _ in range(args.runs))
        print(f"{enc.n_tokens:4d} tokens ({len(enc.lengths)} chunk(s)): median {statistics.median(times):7.1f} ms, "
              f"p90 {times[int(0.9 * (len(times) - 1))]:7.1f} ms")


if __name__ == "__main__":
    main()
