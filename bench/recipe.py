"""Does the recipe reconstruct 10 sentences losslessly on the embedded model, and how fast?

Each sentence is encoded on its own (its restarts side by side in one batch), with the
tuned recipe and with the paper's recipe, the paper's capped at --paper-max-steps where
its 5000 steps would not fit in a CPU run. Accuracy is what the proto-tokens
reconstruct alone (before corrections). A recipe is a preset name, optionally with
changed fields for ablations: `tuned:sink=false,max_steps=300`.
Run: python -m bench.recipe [--recipes tuned paper tuned:sink=false] [--paper-max-steps 600]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

from prototok import RECIPES, EncodeConfig, Recipe, encode_texts, load_model
from prototok.results.tables import records_table

from .common import machine, write
from .sentences import SENTENCES


def parse(spec: str, paper_max_steps: int) -> Recipe:
    """'tuned' or 'paper:sink=true,lr=0.05' -> a Recipe (the paper's capped at paper_max_steps)."""
    name, _, changes = spec.partition(":")
    recipe = RECIPES[name].with_(max_steps=paper_max_steps if name == "paper" else None)
    for item in filter(None, changes.split(",")):
        key, _, value = item.partition("=")
        cur = getattr(recipe, key)
        parsed = value.lower() == "true" if isinstance(cur, bool) else type(cur)(value) if cur is not None else value
        recipe = dataclasses.replace(recipe, **{key: parsed})
    return recipe


def run(lm, name: str, recipe: Recipe, texts: list[str]) -> list[dict]:
    rows = []
    for i, text in enumerate(texts):
        [enc] = encode_texts(lm, [text], EncodeConfig(recipe=recipe))
        rows.append({"recipe": name, "text": i, "n_tokens": enc.n_tokens, "accuracy": enc.accuracy,
                     "lossless": enc.c_tokens == enc.n_tokens, "steps": enc.steps, "seconds": enc.seconds})
        print(rows[-1], flush=True)
    return rows


def summarise(rows: list[dict], recipe: dict) -> dict:
    return {"recipe": rows[0]["recipe"], "lossless": f"{sum(r['lossless'] for r in rows)}/{len(rows)}",
            "mean_accuracy": statistics.mean(r["accuracy"] for r in rows),
            "median_steps": statistics.median(r["steps"] for r in rows),
            "median_seconds": statistics.median(r["seconds"] for r in rows),
            "max_seconds": max(r["seconds"] for r in rows), "settings": recipe}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--recipes", nargs="+", default=["tuned", "paper"])
    ap.add_argument("--paper-max-steps", type=int, default=600)
    ap.add_argument("--texts", type=int, default=len(SENTENCES))
    args = ap.parse_args()
    lm = load_model(args.model)
    texts = SENTENCES[: args.texts]
    all_rows, summary = [], []
    for spec in args.recipes:
        recipe = parse(spec, args.paper_max_steps)
        rows = run(lm, spec, recipe, texts)
        all_rows += rows
        summary.append(summarise(rows, recipe.to_dict()))
    md = records_table(summary, ["recipe", "lossless", "mean_accuracy", "median_steps", "median_seconds", "max_seconds"])
    md += "\n\nRecipes:\n\n" + "\n".join(f"- `{s['recipe']}`: `{s['settings']}`" for s in summary)
    md += "\n\nPer sentence:\n\n" + records_table(all_rows, ["recipe", "text", "n_tokens", "accuracy", "lossless", "steps", "seconds"])
    write("recipe", {"machine": machine(), "model": lm.name, "summary": summary, "rows": all_rows}, md)


if __name__ == "__main__":
    main()
