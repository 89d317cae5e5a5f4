"""The GPU check: what to run the moment a GPU machine is lent (and, tiny, on a CPU: ``--smoke``).

Three parts, each timed, all figures written to ``benchmarks/results/gpu_check.{md,json}``
(``gpu_check_smoke.*`` with ``--smoke``):

1. **kit** - every built-in model (lstm, attention, bert) for every task kind it serves, on the device: a few steps
   of nlpkit's own training loop (``nlpkit.train.loop.train``, the speed rule's paths: fused AdamW, SDPA, pinned
   memory, prefetch), predictions through the loop's ``predict``, a save/load round trip on the device (same
   predictions, the encoder in the layout the rule wants there) and the kit's bf16 autocast check.
2. **recipes** - each shipped recipe (``recipes/*.yaml``) through ``nlpkit run`` in its own process at small scale
   (``train.max_steps``, capped examples), on the device; a recipe whose data is not under ``--data`` is
   reported as skipped, not failed.
3. **seed** - the seed experiment (all-MiniLM-L6-v2, AG News small, batch 8, lr 2e-5, linear warmup, clipping 1.0,
   max_length 128): nlpkit (precision auto: bf16 where the GPU has it) against the Hugging Face ``Trainer`` at its
   best on the same GPU (bf16 - fp16 where bf16 is missing -, ``group_by_length``, ``adamw_torch_fused``,
   ``sdpa`` attention), each in its own process: examples/s of training and test accuracy.

    python benchmarks/gpu_check.py --data /path/to/data            # on the GPU machine (about 10 minutes)
    python benchmarks/gpu_check.py --data /work/shared/data --smoke  # on a CPU: every part, tiny

Exit status 1 when any check failed (the figures are written first).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SEED = {"batch_size": 8, "lr": 2e-5, "warmup_steps": 50, "max_length": 128, "seed": 42, "max_grad_norm": 1.0}
TINY_RECURRENT = {"vocab_size": 200, "embedding_dim": 32, "hidden_size": 32, "dropout": 0.1, "max_length": 24,
                  "char_dim": 8, "char_filters": 8, "target_vocab_size": 100, "beam_size": 2}


def machine(device: str) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "device": device,
            "cpu": platform.processor() or platform.machine()}
    try:
        from nlpkit.train.hardware import cpu_name

        info["cpu"] = cpu_name()
    except ImportError:
        pass
    if device.startswith("cuda"):
        d = torch.device(device)
        capability = ".".join(map(str, torch.cuda.get_device_capability(d)))
        info.update(gpu=torch.cuda.get_device_name(d), capability=capability, bf16=torch.cuda.is_bf16_supported(),
                    cuda=torch.version.cuda,
                    memory_gb=round(torch.cuda.get_device_properties(d).total_memory / 2**30, 1))
    return info


def timed(name: str, fn, results: list, **extra) -> dict:
    """Run one check; record its outcome, time and figures (never raise: the other checks still run)."""
    started = time.perf_counter()
    row = {"check": name, **extra}
    try:
        row.update(fn() or {})
        row["ok"] = True
    except Exception as err:  # a failed check is a figure too
        row.update(ok=False, error=f"{type(err).__name__}: {err}", trace=traceback.format_exc()[-2000:])
    row["seconds"] = round(time.perf_counter() - started, 2)
    results.append(row)
    print(json.dumps({k: v for k, v in row.items() if k != "trace"}), flush=True)
    return row


# --------------------------------------------------------------------------- 1. the kit on the device

def tiny_bert(folder: Path) -> str:
    from nlpkit_plugins.models.bert.pretrained import resolve_pretrained
    from transformers import AutoTokenizer, BertConfig, BertModel

    BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=128), add_pooling_layer=False).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_pretrained("minilm")).save_pretrained(folder)
    return str(folder)


def kit_check(plugin: str, kind: str, options: dict, device: str, steps: int, folder: Path) -> dict:
    from types import SimpleNamespace

    import torch

    from nlpkit import testing
    from nlpkit.plugins import registry
    from nlpkit.train import loop as training
    from nlpkit.train.hardware import use_device
    from nlpkit.train.log import MetricsLog
    from nlpkit.train.options import TrainOptions

    use_device(device)  # before create(): the model's layout follows the device
    model_cls = registry().model(plugin)
    model, examples = testing.build(model_cls, kind, options, n=48)
    features = [model.encode(ex) for ex in examples]
    task = SimpleNamespace(main_metric="loss", greater_is_better=False)
    opts = TrainOptions(max_steps=steps, batch_size=8, lr=3e-3, log_every=1, eval_every=steps, device=device,
                        progress=False)
    accelerator, precision = training.make_accelerator(opts, type(model))
    log = MetricsLog(folder / f"{plugin}-{kind}.jsonl")

    def loss_metric(model, *args, **kwargs) -> dict:
        model.eval()
        with torch.no_grad():
            batch = training._to_device(testing.make_batch(model, examples[:16]), accelerator.device,
                                        model.host_inputs)
            return {"loss": float(model(**batch).loss)}

    before = loss_metric(model.to(accelerator.device))["loss"]
    original, training.evaluate = training.evaluate, loss_metric
    try:
        fit = training.train(model, task, features, [], [], opts, 1, log, accelerator, precision)
    finally:
        training.evaluate = original
    after = loss_metric(model)["loss"]
    on_device = {p.device.type for p in model.parameters()}
    assert on_device == {accelerator.device.type}, f"parameters on {on_device}, run on {accelerator.device}"
    model.save(folder / f"{plugin}-{kind}")
    loaded = model_cls.load(folder / f"{plugin}-{kind}").to(accelerator.device)
    for m in (model, loaded):  # both decode as for the test split (e.g. beam search)
        m.prepare_inference(final=True)
    if hasattr(loaded, "use_beam"):  # older code switched decoding inside load()
        model.use_beam = loaded.use_beam
    preds = training.predict(model, features[:16], opts, accelerator)
    again = training.predict(loaded, features[:16], opts, accelerator)
    same = sum(a["prediction"] == b["prediction"] for a, b in zip(preds, again))
    assert same == len(preds), f"save/load on {device}: {len(preds) - same} of {len(preds)} predictions changed"
    kind_of = accelerator.device.type  # bf16 autocast where the engine uses it (as the kit's own bf16 test decides)
    if (kind_of == "cuda" and torch.cuda.is_bf16_supported()) or (kind_of == "cpu" and not model.prefers_fp32_on_cpu):
        testing.check_bf16(model.to("cpu"), examples, device=kind_of)
    encoder = type(getattr(model, "encoder", None)).__name__
    return {"precision": precision, "loss_before": round(before, 4), "loss_after": round(after, 4),
            "examples_per_s": round(fit.examples / max(fit.train_seconds, 1e-9), 1), "encoder": encoder}


def run_kit(device: str, smoke: bool, results: list) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bert = {"pretrained": tiny_bert(Path(tmp) / "tiny-bert"), "max_length": 32, "stride": 8, "dropout": 0.0,
                "target_vocab_size": 100, "embedding_dim": 16, "hidden_size": 32, "attention_size": 16,
                "beam_size": 2, "encoder_lr": 1e-3}
        options = {"lstm": TINY_RECURRENT, "attention": {**TINY_RECURRENT, "attention_size": 16}, "bert": bert}
        for plugin in ("lstm", "attention", "bert"):
            for kind in ("classification", "tagging", "seq2seq"):
                timed(f"kit {plugin} {kind}", lambda p=plugin, k=kind: kit_check(
                    p, k, options[p], device, 4 if smoke else 30, Path(tmp)), results, part="kit")


# --------------------------------------------------------------------------- 2. shipped recipes

DATA_OF = {"agnews": "ag_news_small", "conll2003": "conll2003", "multi30k": "multi30k"}


def run_recipes(device: str, data: str | None, smoke: bool, results: list) -> None:
    import yaml

    steps, examples = (3, 64) if smoke else (50, 2000)
    for recipe in sorted((ROOT / "recipes").glob("*.yaml")):
        needs = DATA_OF.get(recipe.stem)
        if needs and not (data and (Path(data) / needs).is_dir()):
            results.append({"check": f"recipe {recipe.stem}", "part": "recipes", "ok": None,
                            "skipped": f"no {needs} under --data ({data})"})
            print(json.dumps(results[-1]), flush=True)
            continue

        def one(recipe: Path = recipe) -> dict:
            with tempfile.TemporaryDirectory() as out:
                command = [sys.executable, "-m", "nlpkit", "run", str(recipe), "--set", f"output={out}/runs",
                           "--set", f"reports={out}/reports", "--set", f"train.device={device}",
                           "--set", "train.progress=false"]
                small = {"max_steps": steps, "max_train_examples": examples, "max_eval_examples": examples // 4,
                         "checkpoint_every": None}
                # a model entry's own setting wins over train's: the small scale goes to every entry
                for label, entry in (yaml.safe_load(recipe.read_text()).get("models") or {}).items():
                    command += [x for key, value in small.items() for x in
                                ("--set", f"models.{label}.{key}={'null' if value is None else value}")]
                    if smoke and entry and "seeds" in entry:
                        command += ["--set", f"models.{label}.seeds=[1]"]
                if smoke:  # one seed: the point is that every run works, not the spread
                    command += ["--set", "seeds=[1]"]
                env = dict(os.environ, **({"NLPKIT_DATA": data} if data else {}))
                done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
                if done.returncode:
                    raise RuntimeError(f"nlpkit run exited {done.returncode}: {(done.stdout + done.stderr)[-1500:]}")
                runs = [json.loads(p.read_text()) for p in sorted(Path(out, "runs").glob("*/*/results.json"))]
                return {"runs": [{"run": f"{r['task']}-{r['model']}-seed{r['seed']}", "device": r["device"],
                                  "precision": r["precision"], r["main_metric"]: r["test"][r["main_metric"]],
                                  "examples_per_s": r["train_examples_per_s"], "train_seconds": r["train_seconds"],
                                  "peak_memory_mb": r["peak_memory_mb"]} for r in runs]}

        timed(f"recipe {recipe.stem}", one, results, part="recipes", steps=steps)


# --------------------------------------------------------------------------- 3. the seed experiment

def load_ag_news(folder: str, split: str, limit: int | None) -> tuple[list[str], list[int]]:
    """(texts, label ids) of ``folder/ag_news_small/{split}.csv(.gz)`` as nlpkit's ``ag_news`` dataset reads them."""
    from nlpkit_plugins.datasets.ag_news import CLASSES, read_agnews_csv

    from nlpkit.data.loading import find_file

    path = find_file(Path(folder) / "ag_news_small", f"{split}.csv")
    if path is None:
        raise SystemExit(f"no {split}.csv(.gz) in {Path(folder) / 'ag_news_small'}")
    records = read_agnews_csv(path)[:limit]
    return [r["text"] for r in records], [CLASSES.index(r["label"]) for r in records]


def trainer_worker(a: argparse.Namespace) -> dict:
    """The Hugging Face Trainer at its best on this device: bf16 (fp16 without it), group_by_length, fused AdamW,
    SDPA attention."""
    import numpy as np
    import torch
    from datasets import Dataset
    from nlpkit_plugins.models.bert.pretrained import resolve_pretrained
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    cuda = a.device.startswith("cuda")
    bf16 = cuda and torch.cuda.is_bf16_supported()
    model_path = resolve_pretrained("minilm")
    tok = AutoTokenizer.from_pretrained(model_path)
    limit = 64 if a.smoke else None
    tr_x, tr_y = load_ag_news(a.data, "train", None)
    te_x, te_y = load_ag_news(a.data, "test", limit)
    tr, te = tok(tr_x, truncation=True, max_length=SEED["max_length"]), tok(te_x, truncation=True,
                                                                          max_length=SEED["max_length"])
    train_ds = Dataset.from_dict({**tr, "labels": tr_y, "length": [len(t) for t in tr["input_ids"]]})
    test_ds = Dataset.from_dict({**te, "labels": te_y})
    torch.manual_seed(SEED["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=4, attn_implementation="sdpa")
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=SEED["batch_size"], per_device_eval_batch_size=64,
            max_steps=a.steps, learning_rate=SEED["lr"], warmup_steps=min(SEED["warmup_steps"], a.steps // 10),
            lr_scheduler_type="linear", weight_decay=0.0, max_grad_norm=SEED["max_grad_norm"],
            train_sampling_strategy="group_by_length", bf16=bf16, fp16=cuda and not bf16,
            optim="adamw_torch_fused", use_cpu=not cuda, logging_strategy="no", save_strategy="no",
            eval_strategy="no", report_to="none", disable_tqdm=True, seed=SEED["seed"], dataloader_pin_memory=cuda)
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, processing_class=tok)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        pred = trainer.predict(test_ds)
    accuracy = float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())
    return {"name": "trainer", "precision": "bf16" if bf16 else "fp16" if cuda else "fp32",
            "examples_per_s": round(a.steps * SEED["batch_size"] / seconds, 2), "train_seconds": round(seconds, 2),
            "test_accuracy": round(accuracy, 4), "test_examples": len(te_y)}


def nlpkit_worker(a: argparse.Namespace) -> dict:
    """nlpkit's engine on the same setting (precision auto: bf16 on a GPU that has it)."""
    import yaml

    from nlpkit.config.recipe import parse_recipe
    from nlpkit.run.engine import execute

    with tempfile.TemporaryDirectory() as out:
        recipe = {
            "name": "gpu_check", "output": f"{out}/runs", "reports": f"{out}/reports",
            "task": {"name": "classification", "dataset": "ag_news", "data_dir": str(Path(a.data) / "ag_news_small")},
            "models": {"bert": {"pooling": "pooler", "max_length": SEED["max_length"]}},
            "train": {"batch_size": SEED["batch_size"], "max_steps": a.steps, "lr": SEED["lr"], "weight_decay": 0.0,
                      "warmup": min(SEED["warmup_steps"], a.steps // 10) / a.steps, "grad_clip": SEED["max_grad_norm"],
                      "eval_every": a.steps, "log_every": a.steps, "device": a.device, "progress": False,
                      **({"max_eval_examples": 64} if a.smoke else {})},
            "seeds": [SEED["seed"]],
        }
        res = execute(parse_recipe(yaml.safe_dump(recipe)).runs[0])
    return {"name": "nlpkit", "precision": res["precision"], "examples_per_s": res["train_examples_per_s"],
            "train_seconds": res["train_seconds"], "test_accuracy": round(res["test"]["accuracy"], 4),
            "peak_memory_mb": res["peak_memory_mb"], "device": res["device"]}


def run_seed(a: argparse.Namespace, results: list) -> None:
    if not (a.data and (Path(a.data) / "ag_news_small").is_dir()):
        results.append({"check": "seed experiment", "part": "seed", "ok": None,
                        "skipped": f"no ag_news_small under --data ({a.data})"})
        print(json.dumps(results[-1]), flush=True)
        return
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    for worker in ("trainer", "nlpkit", "trainer", "nlpkit")[: 2 if a.smoke else 4]:  # alternated: A B A B
        def one(worker: str = worker) -> dict:
            command = [sys.executable, __file__, "--worker", worker, "--device", a.device, "--data", a.data,
                       "--steps", str(a.steps)] + (["--smoke"] if a.smoke else [])
            done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if done.returncode or line is None:
                raise RuntimeError(f"{worker} exited {done.returncode}: {(done.stdout + done.stderr)[-1500:]}")
            return json.loads(line[len("RESULT "):])

        timed(f"seed {worker}", one, results, part="seed", steps=a.steps)


# --------------------------------------------------------------------------- report

def write_report(a: argparse.Namespace, info: dict, results: list) -> Path:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "gpu_check_smoke" if a.smoke else "gpu_check"
    seed = {}
    for r in results:
        if r.get("part") == "seed" and r.get("ok"):
            seed.setdefault(r["name"], []).append(r)
    mean = {name: sum(r["examples_per_s"] for r in rs) / len(rs) for name, rs in seed.items()}
    ratio = mean["nlpkit"] / mean["trainer"] if {"nlpkit", "trainer"} <= mean.keys() else None
    report = {"machine": info, "command": " ".join(["python", "benchmarks/gpu_check.py", *sys.argv[1:]]),
              "when": time.strftime("%Y-%m-%d %H:%M:%S"), "smoke": a.smoke, "results": results,
              "seed_examples_per_s": mean, "nlpkit_vs_trainer": ratio}
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    where = info.get("gpu") or f"{info['cpu']} (CPU)"
    lines = [f"# GPU check{' (smoke, tiny)' if a.smoke else ''}", "",
             f"Device: {info['device']} - {where}; torch {info['torch']}; {report['when']}", "",
             f"Command: `{report['command']}`", "", "| part | check | ok | seconds | figures |",
             "| --- | --- | --- | --- | --- |"]
    for r in results:
        figures = {k: v for k, v in r.items() if k not in ("part", "check", "ok", "seconds", "trace")}
        ok = "skipped" if r.get("ok") is None else "yes" if r["ok"] else "**FAILED**"
        lines.append(f"| {r.get('part')} | {r['check']} | {ok} | {r.get('seconds', '')} | "
                     f"{json.dumps(figures)[:400].replace('|', '/')} |")
    if ratio is not None:
        lines += ["", f"Seed experiment, examples/s: nlpkit {mean['nlpkit']:.1f}, Trainer {mean['trainer']:.1f} "
                      f"-> nlpkit / Trainer = {ratio:.2f}x (same device, alternated runs)"]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    return out / f"{stem}.md"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("NLPKIT_DATA"), help="folder with ag_news_small, conll2003, ...")
    ap.add_argument("--device", default=None, help="default: cuda when there is one, else cpu (with --smoke)")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--smoke", action="store_true", help="every part, tiny (a few steps), to check it on a CPU")
    ap.add_argument("--steps", type=int, default=None, help="seed experiment steps (default 500; smoke 5)")
    ap.add_argument("--parts", default="kit,recipes,seed")
    ap.add_argument("--worker", choices=["trainer", "nlpkit"], default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    import torch

    a.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    a.steps = a.steps or (5 if a.smoke else 500)
    if a.worker:
        print("RESULT " + json.dumps((trainer_worker if a.worker == "trainer" else nlpkit_worker)(a)), flush=True)
        return 0
    if a.device == "cpu" and not a.smoke:
        raise SystemExit("No CUDA GPU here: run with --smoke for the tiny CPU check, or on a GPU machine")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    info, results = machine(a.device), []
    parts = set(a.parts.split(","))
    if "kit" in parts:
        run_kit(a.device, a.smoke, results)
    if "recipes" in parts:
        run_recipes(a.device, a.data, a.smoke, results)
    if "seed" in parts:
        run_seed(a, results)
    print(f"Written: {write_report(a, info, results)}")
    return 1 if any(r.get("ok") is False for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
