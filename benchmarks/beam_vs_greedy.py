"""Beam search against greedy decoding on the same trained weights: finished translation runs, their test split.

For each run folder: load the saved model (as ``nlpkit predict`` does), rebuild the run's test split from its
own ``recipe.yaml`` (its resolved settings), and decode it twice through the training loop's ``predict``
(the engine's batching): greedily, and with the recipe's ``beam_size`` (the decoding the run's test figures use).
Each row gives sacreBLEU (13a, detokenized) and chrF, and the decode's wall seconds on this machine.

    NLPKIT_DATA=../shared/data python benchmarks/beam_vs_greedy.py runs/multi30k/translation-*-seed1

Writes ``benchmarks/results/beam_vs_greedy.{md,json}`` (``--out`` for another stem).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from nlpkit.config.recipe import TaskEntry
from nlpkit.errors import NlpkitError
from nlpkit.plugins import registry
from nlpkit.run.engine import load_splits
from nlpkit.run.predict import load_run
from nlpkit.train.hardware import device_description
from nlpkit.train.loop import predict
from nlpkit.train.options import TrainOptions


def decode(model: Any, task: Any, features: list[dict], examples: list[dict], options: TrainOptions,
           final: bool) -> dict[str, Any]:
    """Test metrics and seconds of one decoding of the split: ``final`` as the engine decodes the test split
    (the recipe's ``beam_size``), else greedily (``eval_beam_size`` set to 1, what validation would use)."""
    if not final:
        model.options.eval_beam_size = 1
    started = time.perf_counter()
    predictions = predict(model, features, options, final=final)
    seconds = time.perf_counter() - started
    metrics = task.metrics(examples, predictions)
    return {"beam": model.options.beam_size if final else 1, "bleu": round(metrics["bleu"], 2),
            "chrf": round(metrics["chrf"], 2), "seconds": round(seconds, 2), "sentences": len(examples)}


def compare(folder: Path) -> dict[str, Any]:
    """Greedy and the recipe's beam on one finished run's test split."""
    if not (folder / "results.json").exists():
        raise NlpkitError(f"{folder}: not a finished run (no results.json)")
    settings = yaml.safe_load((folder / "recipe.yaml").read_text())
    task_entry = TaskEntry(**settings["task"])
    task, model = load_run(folder)
    if task.kind != "seq2seq" or not hasattr(model.options, "beam_size"):
        raise NlpkitError(f"{folder}: not a translation run (task kind {task.kind})")
    options = TrainOptions(**settings["train"])
    _, splits = load_splits(task_entry, registry())
    examples = splits["test"][: options.max_eval_examples]
    features = [model.encode(ex) for ex in examples]
    with torch.inference_mode():
        greedy = decode(model, task, features, examples, options, final=False)
        beam = decode(model, task, features, examples, options, final=True)
    recorded = json.loads((folder / "results.json").read_text())["test"]
    return {"run": folder.name, "model": settings["label"], "greedy": greedy, "beam": beam,
            "recorded_test_bleu": round(recorded["bleu"], 2)}


def table(rows: list[dict[str, Any]], device: str) -> str:
    lines = [f"# Beam search vs greedy decoding on the test split ({device})", "",
             "| run | beam | greedy BLEU | beam BLEU | greedy chrF | beam chrF | greedy s | beam s | run's test BLEU |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        g, b = r["greedy"], r["beam"]
        lines.append(f"| {r['run']} | {b['beam']} | {g['bleu']:.2f} | {b['bleu']:.2f} | {g['chrf']:.2f} | "
                     f"{b['chrf']:.2f} | {g['seconds']:.1f} | {b['seconds']:.1f} | {r['recorded_test_bleu']:.2f} |")
    lines += ["", "The run's test BLEU is what its results.json records (decoded with its beam_size); the beam column "
              "recomputes it from the saved weights."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished translation run folders")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "beam_vs_greedy",
                        help="output path without suffix (.md and .json are written)")
    args = parser.parse_args()
    rows = [compare(folder) for folder in args.runs]
    device = device_description(torch.device("cpu"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"device": device, "runs": rows}, indent=2) + "\n")
    text = table(rows, device)
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
