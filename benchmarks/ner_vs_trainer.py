"""BERT token classification (NER) on CPU: Hugging Face ``Trainer`` done the ``run_ner.py`` way vs nlpkit.

Setting: all-MiniLM-L6-v2 on CoNLL-2003 English (train: eng.train, test: eng.testb, tags normalised from IOB1
to IOB2 by nlpkit's ``ner`` task for both sides), 1 epoch, batch 8, lr 5e-5, no warmup, linear decay, AdamW
(weight decay 0), clipping at 1.0, seed 42. The label of each word is put on its first sub-token; the other
sub-tokens are ignored in the loss (-100), as ``run_ner.py`` does with ``label_all_tokens`` off.

Runs back to back, each in its own subprocess (peak RSS = that process's VmHWM):
  1. ``trainer``      - ``AutoModelForTokenClassification`` + ``DataCollatorForTokenClassification`` + ``Trainer``,
                        ``train_sampling_strategy='group_by_length'`` (what makes it fastest on CPU here), fp32.
  2. ``trainer_bf16`` - the same with ``bf16=True``, only on a CPU with native bf16 (avx512_bf16 / amx_bf16).
  3. ``nlpkit``       - ``nlpkit.run.engine.execute`` on a recipe (``ner`` task, ``conll2003`` dataset, ``bert`` model;
                        precision auto: bf16 only where the CPU has it natively).
Test entity F1 is seqeval's strict IOB2 micro F1 over whole testb for both (the Trainer's words are scored
by the argmax at their first sub-token, nlpkit's by its IOB2-constrained decoding).

    python benchmarks/ner_vs_trainer.py --data ../shared/data [--train-limit N] [--rounds R] [--out benchmarks/results]

With ``--rounds R`` the sides alternate R times and the speedup is the median of the R per-round ratios: on a
shared virtual machine both sides' speed drifts together by a quarter within minutes, their ratio much less.

examples/s counts training only (tokenization, model loading and evaluation are outside the timed region).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bert_vs_trainer import cpu_info, model_path, peak_rss_mb, run_child  # noqa: E402

SETTING = dict(epochs=1, batch_size=8, lr=5e-5, seed=42, max_grad_norm=1.0)


def conll_splits(data: str, limit: int | None, test_limit: int | None = None):
    """Train and test examples ({tokens, tags}) and the tag names, through nlpkit's own reader and task."""
    from nlpkit_plugins.datasets.conll2003 import Conll2003
    from nlpkit_plugins.tasks.ner import NER

    dataset = Conll2003(data_dir=Path(data) / "conll2003")
    task = NER()
    splits = task.prepare({s: dataset.load(s) for s in ("train", "test")}, dataset.labels())
    train = splits["train"][:limit] if limit else splits["train"]
    return train, splits["test"][:test_limit] if test_limit else splits["test"], task.spec.labels


# --------------------------------------------------------------------------- trainer worker

def trainer_worker(a):
    import tempfile

    import numpy as np
    import torch
    from datasets import Dataset
    from seqeval.metrics import f1_score
    from seqeval.scheme import IOB2
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
    )

    if a.threads:
        torch.set_num_threads(a.threads)
    train, test, names = conll_splits(a.data, a.train_limit, a.test_limit)
    tok = AutoTokenizer.from_pretrained(a.model)

    def tokenize_and_align(examples: list[dict]) -> Dataset:  # run_ner.py's tokenize_and_align_labels
        enc = tok([e["tokens"] for e in examples], is_split_into_words=True, truncation=True, max_length=512)
        labels = []
        for i, e in enumerate(examples):
            previous, row = None, []
            for w in enc.word_ids(i):
                row.append(-100 if w is None or w == previous else e["tags"][w])
                previous = w
            labels.append(row)
        return Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                                  "labels": labels, "length": [len(x) for x in enc["input_ids"]]})

    train_ds, test_ds = tokenize_and_align(train), tokenize_and_align(test)
    torch.manual_seed(a.seed)
    model = AutoModelForTokenClassification.from_pretrained(
        a.model, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=a.batch_size, per_device_eval_batch_size=32,
            num_train_epochs=a.epochs, learning_rate=a.lr, warmup_steps=0, lr_scheduler_type="linear",
            weight_decay=0.0, max_grad_norm=SETTING["max_grad_norm"], train_sampling_strategy="group_by_length",
            bf16=a.bf16, use_cpu=True, logging_strategy="no", save_strategy="no", eval_strategy="no",
            report_to="none", disable_tqdm=True, seed=a.seed, dataloader_num_workers=0)
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, processing_class=tok,
                          data_collator=DataCollatorForTokenClassification(tok))
        t0 = time.perf_counter()
        trainer.train()
        secs = time.perf_counter() - t0
        pred = trainer.predict(test_ds)
    # Rows may come back in another order (length grouping); each row carries its own labels, so score per row.
    gold, hyp = [], []
    for logits, labels in zip(pred.predictions, pred.label_ids):
        keep = labels != -100
        gold.append([names[i] for i in labels[keep]])
        hyp.append([names[i] for i in np.argmax(logits, -1)[keep]])
    assert sum(map(len, gold)) == sum(len(e["tokens"]) for e in test), "every test word must be scored"
    return {"name": "trainer_bf16" if a.bf16 else "trainer", "examples_per_s": len(train) * a.epochs / secs,
            "train_seconds": secs, "test_f1": float(f1_score(gold, hyp, mode="strict", scheme=IOB2)),
            "peak_rss_mb": peak_rss_mb(), "threads": torch.get_num_threads(), "bf16": a.bf16}


# --------------------------------------------------------------------------- nlpkit worker

def nlpkit_worker(a):
    """``nlpkit run`` on the same data and setting, through the engine (examples/s from results.json)."""
    import tempfile

    import torch
    import yaml

    from nlpkit.config.recipe import parse_recipe
    from nlpkit.run.engine import execute

    if a.threads:
        torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as out:
        recipe = {
            "name": "ner_vs_trainer", "output": f"{out}/runs", "reports": f"{out}/reports",
            "task": {"name": "ner", "dataset": "conll2003", "data_dir": os.path.join(a.data, "conll2003")},
            "models": {"bert": {"pretrained": str(a.model), "max_length": 128}},
            "train": {"batch_size": a.batch_size, "epochs": a.epochs, "lr": a.lr, "weight_decay": 0.0,
                      "warmup": 0.0, "grad_clip": SETTING["max_grad_norm"], "log_every": 10**6,
                      "max_train_examples": a.train_limit, "max_eval_examples": a.test_limit,
                      "max_test_examples": a.test_limit, "subset": "head",  # the Trainer side's slices
                      "precision": "auto", "progress": False},
            "seeds": [a.seed],
        }
        res = execute(parse_recipe(yaml.safe_dump(recipe)).runs[0])
    return {"name": "nlpkit", "examples_per_s": res["train_examples_per_s"], "train_seconds": res["train_seconds"],
            "test_f1": res["test"]["f1"], "peak_rss_mb": peak_rss_mb(), "threads": torch.get_num_threads(),
            "precision": res.get("precision"), "steps": res["steps"], "train_examples": res["train_examples"]}


# --------------------------------------------------------------------------- driver

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("NLPKIT_DATA"), help="folder holding conll2003/")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--train-limit", type=int, default=None, help="first N training sentences (default: all)")
    ap.add_argument("--test-limit", type=int, default=None, help=argparse.SUPPRESS)  # smoke runs only
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--only", choices=["trainer", "nlpkit"], default=None)
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternate the sides this many times; the speedup is the median of the rounds' ratios "
                         "(a shared machine's speed drifts by 25%% within minutes)")
    ap.add_argument("--worker", choices=["trainer", "nlpkit"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    for k in ("epochs", "batch_size", "seed"):
        ap.add_argument("--" + k.replace("_", "-"), type=int, default=SETTING[k])
    ap.add_argument("--lr", type=float, default=SETTING["lr"])
    ap.add_argument("--model", default=None)
    a = ap.parse_args(argv)
    if not a.data:
        raise SystemExit("give --data or set NLPKIT_DATA (the folder holding conll2003/)")
    a.model = a.model or model_path()
    if a.worker:
        print("RESULT " + json.dumps((trainer_worker if a.worker == "trainer" else nlpkit_worker)(a)), flush=True)
        return

    cpu = cpu_info()
    common = ["--data", a.data, "--model", str(a.model), "--epochs", str(a.epochs), "--batch-size", str(a.batch_size),
              "--lr", str(a.lr), "--seed", str(a.seed), "--threads", str(a.threads)]
    for flag, value in (("--train-limit", a.train_limit), ("--test-limit", a.test_limit)):
        if value:
            common += [flag, str(value)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_WAIT_POLICY="PASSIVE")
    me = os.path.abspath(__file__)
    load0, runs, ratios = os.getloadavg(), [], []
    for round_ in range(1, a.rounds + 1):
        sides = []
        if a.only in (None, "trainer"):
            sides.append(["--worker", "trainer"])
            if cpu["native_bf16"]:
                sides.append(["--worker", "trainer", "--bf16"])
        if a.only in (None, "nlpkit"):
            sides.append(["--worker", "nlpkit"])
        mine = []
        for side in sides:
            mine.append(dict(run_child([me, *side, *common], env), round=round_))
            print(json.dumps(mine[-1]), flush=True)
        runs += mine
        best_trainer = max((r for r in mine if r["name"].startswith("trainer")), key=lambda r: r["examples_per_s"],
                           default=None)
        ours = [r for r in mine if r["name"] == "nlpkit"]
        if best_trainer and ours:
            ratios.append(ours[0]["examples_per_s"] / best_trainer["examples_per_s"])
    ratio = statistics.median(ratios) if ratios else None
    lines = [f"CPU: {cpu['model_name']} ({cpu['logical_cpus']} logical CPUs, native bf16: {cpu['native_bf16']})",
             f"setting: CoNLL-2003 train ({runs[0].get('train_examples') or a.train_limit or 'all'} sentences), "
             f"{a.epochs} epoch, batch {a.batch_size}, lr {a.lr}, MiniLM-L6; test = eng.testb",
             f"load average start {load0[0]:.1f}, end {os.getloadavg()[0]:.1f} (shared machine if > 0.5)", "",
             "| round | run | examples/s | train s | test entity F1 | peak RSS MB |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['round']} | {r['name']} | {r['examples_per_s']:.2f} | {r['train_seconds']:.0f} | "
              f"{r['test_f1']:.4f} | {r['peak_rss_mb']:.0f} |" for r in runs]
    if ratio:
        lines.append(f"\nnlpkit / best Trainer of the same round: {', '.join(f'{x:.2f}x' for x in ratios)}; "
                     f"median {ratio:.2f}x")
    text = "\n".join(lines)
    print(text)
    os.makedirs(a.out, exist_ok=True)
    report = {"cpu": cpu, "setting": {k: getattr(a, k) for k in ("epochs", "batch_size", "lr", "seed", "train_limit")},
              "loadavg_start": load0, "loadavg_end": os.getloadavg(), "runs": runs, "speedups": ratios,
              "speedup": ratio,
              "command": "python benchmarks/ner_vs_trainer.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    with open(os.path.join(a.out, "ner_vs_trainer.json"), "w") as fh:
        json.dump(report, fh, indent=2)
    with open(os.path.join(a.out, "ner_vs_trainer.md"), "w") as fh:
        fh.write(text + "\n")


if __name__ == "__main__":
    main()
