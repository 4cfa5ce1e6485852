"""`prototok experiment NAME`: the command-line entry of the experiments.

`prototok/cli.py` registers `experiment` (wrapped so input errors print one line and exit 2);
`python -m prototok.experiments NAME ...` runs the same command without the CLI.
"""

from pathlib import Path
from typing import Annotated

import typer

from ..errors import InvalidInput
from .datasets import DATASETS


def parse_lengths(values: list[str] | None) -> list[int] | None:
    """`--lengths 4,8,16`, `--lengths 4 --lengths 8`, or both mixed."""
    if not values:
        return None
    try:
        return [int(x) for v in values for x in v.replace(" ", ",").split(",") if x]
    except ValueError as exc:
        raise InvalidInput(f"--lengths takes integers, comma-separated or repeated: {values}") from exc


def experiment(
    name: Annotated[str, typer.Argument(help="arrangements | sharing | capacity | throughput | distances | "
                                             "interpolation | bezier")],
    model: Annotated[str | None, typer.Option(help="HF name, local path, .gguf or alias (default: embedded SmolLM2).")] = None,
    dataset: Annotated[str, typer.Option(help="random | prose | generated | file:PATH (one text a line, or a folder of .txt).")] = "prose",
    texts: Annotated[int, typer.Option(min=1, help="Number of texts (distances: contexts).")] = 8,
    lengths: Annotated[list[str] | None, typer.Option(help="Prefix lengths in tokens, comma-separated or repeated (default: the experiment's grid).")] = None,
    seeds: Annotated[int | None, typer.Option(min=1, help="Seeds: restarts (arrangements, capacity), seeds per text (sharing, distances, interpolation, bezier).")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Optimisation steps (overrides the recipe).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: runs/experiments/NAME); an existing run there resumes.")] = None,
    recipe: Annotated[str, typer.Option(help="Optimisation recipe preset: tuned or paper.")] = "tuned",
    data_seed: Annotated[int, typer.Option(help="Seed that picks and generates the texts.")] = 0,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, ... (default: PROTOTOK_DEVICE or auto).")] = None,
    capacity: Annotated[Path | None, typer.Option(help="throughput: a capacity run's folder; time each text at its own lossless lengths.")] = None,
) -> None:
    """Re-run one experiment of the paper: results.csv, summary.md, plots and run.json in --out."""
    from ..models import quiet_libraries
    from .arguments import Args
    from .registry import EXPERIMENTS

    if name not in EXPERIMENTS:
        raise InvalidInput(f"unknown experiment '{name}' (choose from {', '.join(EXPERIMENTS)})")
    if dataset not in DATASETS[:3] and not dataset.startswith("file:") and not Path(dataset).exists():
        raise InvalidInput(f"unknown dataset '{dataset}' (choose from random, prose, generated, file:PATH)")
    quiet_libraries()
    args = Args(name=name, model=model, dataset=dataset, texts=texts, lengths=parse_lengths(lengths), seeds=seeds,
                max_steps=max_steps, recipe=recipe, data_seed=data_seed, device=device,
                capacity=str(capacity) if capacity else None)
    summary = EXPERIMENTS[name](args, out or Path("runs/experiments") / name)
    typer.echo(f"{summary.parent}: results.csv, summary.md, run.json and plots written")
