"""One side of `bench.speed`: a process that loads the model once and encodes what it is told.

Runs under whichever `prototok` comes first on PYTHONPATH (today's code or a snapshot of an
older commit), so it uses only names both have. Reads one JSON request per line on stdin
({"texts": [...], "recipe": {field: value}, "dtype": optional}), answers one JSON line per request on stdout.
Seconds are the wall time of `encode_texts` (the optimisation plus the bookkeeping a user
waits for), not the model load.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()  # no options: --help says what it is
    warnings.filterwarnings("ignore")
    import torch

    from prototok import RECIPES, EncodeConfig, encode_texts, load_model

    lm = load_model()
    models = {None: lm}
    info = {"ready": True, "dtype": str(lm.dtype).removeprefix("torch."), "threads": torch.get_num_threads()}
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        dtype = req.get("dtype")
        if dtype not in models:
            models[dtype] = load_model(dtype=dtype)
        lm = models[dtype]
        recipe = RECIPES["tuned"].with_(**req.get("recipe", {}))
        chunking = {"chunk_tokens": req["chunk_tokens"]} if req.get("chunk_tokens") else {}  # else the version's own
        cfg = EncodeConfig(recipe=recipe, **chunking)
        start = time.perf_counter()
        encs = encode_texts(lm, req["texts"], cfg)
        seconds = time.perf_counter() - start
        rows = [{"n_tokens": e.n_tokens, "c_tokens": e.c_tokens, "lossless": e.c_tokens == e.n_tokens,
                 "steps": e.steps} for e in encs]
        print(json.dumps({"seconds": seconds, "encodings": rows, "recipe": recipe.to_dict(),
                          "dtype": str(lm.dtype).removeprefix("torch.")}), flush=True)


if __name__ == "__main__":
    main()
