"""Where a step of the seed experiment's BERT fine-tuning spends its time (issue #21's profile tables).

Runs the seed experiment (``benchmarks/bert_vs_trainer.py``'s nlpkit side: MiniLM with its pooler, ag_news_small,
batch 8, lr 2e-5) through nlpkit's engine in this process and profiles steps ``--skip`` .. ``--skip + --steps``
with ``torch.profiler`` (CPU, self time per operator). Prints the table and the profiled steps' mean time.

    python benchmarks/profile_bert_step.py --data /work/shared/data [--precision auto] [--rows 25]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("NLPKIT_DATA"))
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--skip", type=int, default=30, help="steps before the profiled ones (kernels built, caches warm)")
    ap.add_argument("--steps", type=int, default=60, help="profiled steps")
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--no-profile", action="store_true", help="time the steps only")
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import tempfile

    import torch
    import yaml
    from bert_vs_trainer import SETTING, model_path, resolve_data

    import nlpkit.train.loop as loop
    from nlpkit.config.recipe import parse_recipe
    from nlpkit.run.engine import execute

    total = a.skip + a.steps
    marks: list[float] = []
    prof = None if a.no_profile else torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU],
        schedule=torch.profiler.schedule(wait=a.skip - 1, warmup=1, active=a.steps, repeat=1))
    real_step = loop._optimizer_step

    def step(state, wrapped, grad_clip):  # the loop's optimizer step, then a mark for the profiler and the clock
        real_step(state, wrapped, grad_clip)
        marks.append(time.perf_counter())
        if prof is not None:
            prof.step()

    loop._optimizer_step = step
    with tempfile.TemporaryDirectory() as out:
        recipe = {
            "name": "profile", "output": f"{out}/runs", "reports": f"{out}/reports",
            "task": {"name": "classification", "dataset": "ag_news", "data_dir": resolve_data(a.data)},
            "models": {"bert": {"pretrained": str(model_path()), "pooling": "pooler", "max_length": 128}},
            "train": {"batch_size": SETTING["batch_size"], "max_steps": total, "lr": SETTING["lr"],
                      "weight_decay": 0.0, "warmup": 0.1, "grad_clip": SETTING["max_grad_norm"],
                      "eval_every": total, "log_every": total, "precision": a.precision, "progress": False},
            "seeds": [SETTING["seed"]],
        }
        spec = parse_recipe(yaml.safe_dump(recipe)).runs[0]
        if prof is not None:
            prof.start()
        res = execute(spec)
        if prof is not None:
            prof.stop()
    timed = marks[a.skip:]
    per_step = (timed[-1] - timed[0]) / (len(timed) - 1)
    print(f"precision {res.get('precision')}, steps {a.skip}..{total}: {per_step * 1e3:.1f} ms/step, "
          f"{SETTING['batch_size'] / per_step:.1f} examples/s (profiler {'off' if prof is None else 'on'}); "
          f"whole run {res['train_examples_per_s']:.1f} examples/s, test accuracy {res['test']['accuracy']:.4f}")
    if prof is not None:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows))


if __name__ == "__main__":
    main()
