"""Tests for nlpkit.report.write: synthetic run folders with known numbers, checked through tables, files and verdicts."""

from __future__ import annotations

import csv
import json
import math
import random
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nlpkit.errors import NlpkitError
from nlpkit.report import stats as report_stats
from nlpkit.report import tables as report_tables
from nlpkit.report import write as report

LABELS = ["World", "Sports", "Business", "Sci/Tech"]


# ---------------------------------------------------------------- helpers that write run folders

def make_run(root: Path, *, model: str, seed: int, test: dict[str, float], recipe: str = "agnews",
             task: str = "classification", kind: str = "classification", dataset: str = "ag_news",
             main_metric: str = "accuracy", predictions: list[dict[str, Any]] | None = None,
             details: dict[str, Any] | None = None, **extra: Any) -> Path:
    """Write a finished run folder following the run-folder contract; returns the folder."""
    run = root / recipe / f"{task}-{model}-seed{seed}"
    run.mkdir(parents=True)
    results = {"recipe": recipe, "task": task, "task_kind": kind, "dataset": dataset, "model": model, "seed": seed,
               "main_metric": main_metric, "greater_is_better": True, "test": test, "test_details": details or {},
               "validation": test, "train_seconds": 100.0 + seed, "train_examples_per_s": 50.0 * (seed + 1),
               "peak_memory_mb": 1000.0, "parameters": 1_000_000, "device": "cpu", "precision": "fp32",
               "steps": 100, "epochs": 1.0, "labels": LABELS} | extra
    (run / "results.json").write_text(json.dumps(results))
    (run / "recipe.yaml").write_text(f"task: {task}\nmodel: {model}\n")
    log = [{"step": s, "epoch": s / 100, "split": "train", "loss": 2.0 / s ** 0.5 + 0.01 * seed}
           for s in range(10, 101, 10)]
    log += [{"step": s, "epoch": s / 100, "split": "validation", main_metric: test[main_metric] * s / 100}
            for s in (50, 100)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    if predictions is not None:
        (run / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions))
    return run


def classification_predictions(n_correct: int, n: int = 100, text: str = "some news") -> list[dict[str, Any]]:
    """``n`` examples of which the first ``n_correct`` are predicted right."""
    out = []
    for i in range(n):
        label = LABELS[i % 4]
        prediction = label if i < n_correct else LABELS[(i + 1) % 4]
        out.append({"index": i, "text": f"{text} {i}", "label": label, "prediction": prediction})
    return out


def translation_predictions(quality: float, n: int = 40, seed: int = 0, attention: bool = True) -> list[dict[str, Any]]:
    """Sentences of 3 to 60 words; a hypothesis keeps each reference word with probability ``quality``.
    With ``attention``, the first 20 carry (target x source) attention weights, as an additive-attention model's do."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(50)]
    out = []
    for i in range(n):
        length = 3 + (i * 57) // n
        source = " ".join(rng.choice(words) for _ in range(length))
        reference = " ".join(f"t{w[1:]}" for w in source.split())
        hypothesis = " ".join(w if random.Random(i * 1000 + j).random() < quality else "x"
                              for j, w in enumerate(reference.split()))
        p = {"index": i, "source": source, "reference": reference, "hypothesis": hypothesis}
        if attention and i < 20:
            src, tgt = source.split()[:10], hypothesis.split()[:10]
            weights = np.random.default_rng(i).dirichlet(np.ones(len(src)), size=len(tgt))
            p |= {"attention": weights.tolist(), "source_tokens": src, "target_tokens": tgt}
        out.append(p)
    return out


def translation_runs(root: Path) -> None:
    for model, quality in (("attention", 0.9), ("seq2seq", 0.5)):
        for seed in (1, 2):
            preds = translation_predictions(quality, seed=seed, attention=model == "attention")
            make_run(root, recipe="wmt", task="translation", kind="seq2seq", dataset="wmt14", model=model, seed=seed,
                     main_metric="bleu", test={"bleu": 40.0 * quality + seed, "chrf": 60.0 * quality},
                     predictions=preds, train_tokens_per_s=1000.0 * seed)


# ---------------------------------------------------------------- tables

def test_means_stds_and_best_marks(tmp_path: Path) -> None:
    for seed, (acc_a, acc_b) in enumerate([(0.90, 0.80), (0.91, 0.82), (0.92, 0.84)], start=1):
        make_run(tmp_path / "runs", model="bert", seed=seed, test={"accuracy": acc_a, "loss": 0.5})
        make_run(tmp_path / "runs", model="lstm", seed=seed, test={"accuracy": acc_b, "loss": 0.3})
    runs, skipped = report.load_runs([tmp_path / "runs"])
    assert len(runs) == 6 and skipped == []
    frame = report_tables.results_frame(runs)
    agg = report_tables.aggregate(frame).set_index("model")
    assert agg.loc["bert", "accuracy_mean"] == pytest.approx(0.91)
    assert agg.loc["bert", "accuracy_std"] == pytest.approx(0.01)
    assert agg.loc["lstm", "accuracy_mean"] == pytest.approx(0.82)
    assert agg.loc["lstm", "accuracy_std"] == pytest.approx(0.02)
    assert agg.loc["bert", "n_seeds"] == 3

    table = report_tables.metric_table(frame)
    assert table.header[:4] == ["model", "seeds", "accuracy (main)", "loss"]
    assert table.rows[0][:4] == ["bert", "1 2 3", "0.9100 ± 0.0100", "0.5000 ± 0.0000"]
    assert table.rows[1][2] == "0.8200 ± 0.0200"
    assert table.best == {(0, 2), (1, 3)}  # higher accuracy, lower loss

    out = tmp_path / "report"
    report.write_report([tmp_path / "runs"], out, formats=("md",))
    md = (out / "report.md").read_text()
    assert "| bert | 1 2 3 | **0.9100 ± 0.0100** | 0.5000 ± 0.0000 |" in md
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    assert {"task", "dataset", "model", "seed", "accuracy", "train_seconds", "train_examples_per_s",
            "peak_memory_mb", "parameters", "device", "precision"} <= set(rows[0])


def test_summarize_from_folders_and_dicts(tmp_path: Path) -> None:
    run = make_run(tmp_path, model="bert", seed=1, test={"accuracy": 0.9})
    second = json.loads((run / "results.json").read_text()) | {"seed": 2, "test": {"accuracy": 0.8}}
    path = report.summarize([run, second], tmp_path / "summary")
    assert path == tmp_path / "summary" / "summary.md"
    with open(tmp_path / "summary" / "summary.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["accuracy_mean"]) == pytest.approx(0.85)
    assert float(row["accuracy_std"]) == pytest.approx(math.sqrt(0.005))
    assert float(row["train_examples_per_s_mean"]) == pytest.approx(100.0)
    assert "0.8500 ± 0.0707" in path.read_text()


# ---------------------------------------------------------------- significance

def test_mcnemar_verdicts(tmp_path: Path) -> None:
    make_run(tmp_path, model="bert", seed=1, test={"accuracy": 0.95}, predictions=classification_predictions(95))
    make_run(tmp_path, model="attention", seed=1, test={"accuracy": 0.5}, predictions=classification_predictions(50))
    make_run(tmp_path, model="twin", seed=1, test={"accuracy": 0.95}, predictions=classification_predictions(95))
    runs, _ = report.load_runs([tmp_path])
    by_model = {r["model"]: [r] for r in sorted(runs, key=lambda r: r["model"])}
    tests = {(t["model_a"], t["model_b"]): t for t in report_stats.significance(by_model)}
    assert tests["attention", "bert"]["verdict"] == "bert > attention, p < 0.001"
    assert tests["attention", "bert"]["p"] < 0.01
    assert tests["bert", "twin"]["verdict"] == "no significant difference (p = 1)"
    assert report_stats.mcnemar_p([True] * 10, [True] * 10) == 1.0
    assert tests["attention", "bert"]["p"] == pytest.approx(2 * 0.5**45)  # 45 discordant pairs, all for bert
    assert report_stats.mcnemar_p([True] * 5 + [False], [False] * 5 + [True]) == pytest.approx(2 * 7 / 64)


def test_first_common_seed_is_compared(tmp_path: Path) -> None:
    make_run(tmp_path, model="a", seed=1, test={"accuracy": 0.95}, predictions=classification_predictions(95))
    make_run(tmp_path, model="a", seed=2, test={"accuracy": 0.5}, predictions=classification_predictions(50))
    make_run(tmp_path, model="b", seed=2, test={"accuracy": 0.5}, predictions=classification_predictions(50))
    runs, _ = report.load_runs([tmp_path])
    by_model = {"a": [r for r in runs if r["model"] == "a"], "b": [r for r in runs if r["model"] == "b"]}
    (test,) = report_stats.significance(by_model)
    assert test["seeds"] == "2 / 2"
    assert test["verdict"].startswith("no significant difference")


def test_ner_bootstrap_matches_seqeval_and_decides(tmp_path: Path) -> None:
    from seqeval.metrics import f1_score

    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "O"], ["B-LOC", "O", "B-PER"]] * 20
    good = [list(g) for g in gold]
    bad = [["O"] * len(g) if i % 2 else list(g) for i, g in enumerate(gold)]
    f1, bootstrap = report_stats.f1_from_stats, report_stats.paired_bootstrap_p
    stats = report_stats.entity_stats(gold, bad)
    assert f1(stats.sum(0)) == pytest.approx(f1_score(gold, bad))
    assert bootstrap(stats, stats, f1, n_resamples=200) == 1.0
    p = bootstrap(report_stats.entity_stats(gold, good), stats, f1, n_resamples=1000, seed=3)
    assert p < 0.01
    assert report_stats.verdict("crf", "bilstm", 0.2, p) == "crf > bilstm, p < 0.001"
    assert report_stats.verdict("crf", "bilstm", 0.2, 0.005) == "crf > bilstm, p < 0.01"
    assert report_stats.verdict("crf", "bilstm", 0.02, 0.4) == "no significant difference (p = 0.4)"
    assert report_stats.verdict("a", "b", 1.5, 0.001, greater_is_better=False) == "b > a, p < 0.01"


# ---------------------------------------------------------------- whole reports

def test_escaping_of_data_text(tmp_path: Path) -> None:
    evil = "<script>alert('x')</script>"
    for model, n in (("bert", 90), ("lstm", 60)):
        make_run(tmp_path, model=model, seed=1, test={"accuracy": n / 100},
                 predictions=classification_predictions(n, text=evil))
    plugin_md = f"Plugin text with {evil} and a | pipe\n\n`<code>` stays code"

    def extra(task: str, runs: list[dict[str, Any]], out_dir: str) -> list[Any]:
        return [[{"title": "Plugin says", "markdown": plugin_md, "figures": []}], None]  # pluggy's shape

    out = tmp_path / "report"
    html_path = report.write_report([tmp_path], out, extra_sections=extra)
    html = html_path.read_text()
    assert html_path.name == "report.html"
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(" in html
    assert "Plugin says" in html and "<code>&lt;code&gt;</code>" in html
    assert "`<code>` stays code" in (out / "report.md").read_text()
    md = (out / "report.md").read_text()
    assert "&lt;script>alert(" in md and "<script>" not in md  # plugin Markdown too
    assert "Plugin text with &lt;script>" in md
    assert "data:image/png;base64," in html  # self-contained
    assert "src=\"figures/" not in html


def test_unfinished_runs_are_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run(tmp_path / "runs", model="bert", seed=1, test={"accuracy": 0.9})
    unfinished = tmp_path / "runs" / "agnews" / "classification-bert-seed2"
    unfinished.mkdir()
    (unfinished / "recipe.yaml").write_text("model: bert\n")
    (tmp_path / "runs" / "agnews" / "recipe.yaml").write_text("name: agnews\n")  # a recipe folder, not a run
    out = tmp_path / "report"
    report.write_report([tmp_path / "runs"], out, formats=("md",))
    err = capsys.readouterr().err
    assert f"skipping unfinished run {unfinished.resolve()}" in err
    assert err.count("skipping") == 1
    assert len((out / "results.csv").read_text().strip().splitlines()) == 2
    assert not (out / "report.html").exists()
    with pytest.raises(NlpkitError, match="No finished runs"):
        report.write_report([unfinished], tmp_path / "empty")


def test_report_over_classification_and_translation(tmp_path: Path) -> None:
    for seed in (1, 2):
        make_run(tmp_path, model="bert", seed=seed, test={"accuracy": 0.9, "macro_f1": 0.88},
                 predictions=classification_predictions(90),
                 details={"confusion_matrix": [[20, 5, 0, 0], [0, 25, 0, 0], [0, 0, 25, 0], [0, 0, 0, 25]],
                          "labels": LABELS})
        make_run(tmp_path, model="lstm", seed=seed, test={"accuracy": 0.7, "macro_f1": 0.66},
                 predictions=classification_predictions(70))  # no details: recomputed from predictions
    translation_runs(tmp_path)
    out = tmp_path / "report"
    compat = ({"bert": ["classification", "tagging"], "attention": ["seq2seq"]},
              {"classification": "classification", "translation": "seq2seq"})
    report.write_report([tmp_path / "agnews", tmp_path / "wmt"], out, compat=compat, n_resamples=200)
    names = {p.name for p in (out / "figures").iterdir()}
    for expected in ("classification_ag_news_learning_curves.png", "classification_ag_news_confusion_bert.png",
                     "classification_ag_news_confusion_lstm.png", "translation_wmt14_bleu_by_length.png",
                     "translation_wmt14_learning_curves.png", "translation_wmt14_metrics.png",
                     "translation_wmt14_attention_attention_0.png", "translation_wmt14_attention_attention_2.png"):
        assert expected in names
    assert not any("attention_seq2seq" in name for name in names)  # no attention weights, no heatmap
    for name in names:
        assert (out / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "## classification — ag\\_news" not in md  # intraword underscores stay readable
    assert "## classification — ag_news" in md and "## translation — wmt14" in md
    assert "### BLEU by source length" in md
    assert "attention > seq2seq, p < 0.01" in md
    assert "bert > lstm, p < 0.001" in md
    assert "| bert | ✓ | –" in md  # compatibility matrix
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["task"] for r in rows} == {"classification", "translation"} and len(rows) == 8
    assert rows[-1]["bleu"] and rows[-1]["train_tokens_per_s"]

    import sacrebleu

    runs, _ = report.load_runs([tmp_path / "wmt"])
    by_model = {m: sorted((r for r in runs if r["model"] == m), key=lambda r: r["seed"])
                for m in ("attention", "seq2seq")}
    (test,) = report_stats.significance(by_model, n_resamples=50)
    lines = (Path(by_model["attention"][0]["run_dir"]) / "predictions.jsonl").read_text().splitlines()
    seed1 = [json.loads(line) for line in lines]
    expected = sacrebleu.corpus_bleu([p["hypothesis"] for p in seed1], [[p["reference"] for p in seed1]]).score
    assert test["score_a"] == pytest.approx(expected)  # summed sufficient statistics = corpus BLEU

    report.write_report([tmp_path / "agnews"], tmp_path / "plain", formats=("md",))
    assert "Installed plugins" not in (tmp_path / "plain" / "report.md").read_text()


def test_compatibility_markdown() -> None:
    md = report.compatibility_markdown({"crf": ["tagging"], "bert": ["classification", "tagging"]},
                                       {"ner": "tagging", "agnews": "classification"})
    assert md.splitlines() == ["| model | ner (tagging) | agnews (classification) |", "|---|---|---|",
                               "| bert | ✓ | ✓ |", "| crf | ✓ | – |"]


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    for model, n in (("bert", 92), ("lstm", 71)):
        for seed in (1, 2):
            make_run(tmp_path, model=model, seed=seed, test={"accuracy": n / 100 + seed / 200},
                     predictions=classification_predictions(n))
    html = report.write_report([tmp_path], tmp_path / "report")
    shot = tmp_path / "shot.png"
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2000",
               html.resolve().as_uri()]
    subprocess.run(command, capture_output=True, timeout=60, check=False)
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels[..., :3].std() > 0.05  # not a blank page: text, tables and figures drew


def test_length_buckets_merge_a_sparse_top_bucket():
    from nlpkit.report.figures import MIN_BUCKET, length_bucket, length_edges

    lengths = [5] * 400 + [12] * 400 + [18] * 100 + [25] * (MIN_BUCKET - 2) + [35] * 2  # Multi30k-like
    edges = length_edges(lengths)
    assert edges == (10, 15, 20)  # 21-30 and 31-40 would hold 28 and 2 sentences: one "21+" bucket of 30
    assert [length_bucket(n, edges) for n in (1, 12, 20, 21, 99)] == ["1-10", "11-15", "16-20", "21+", "21+"]
    assert length_edges([60] * MIN_BUCKET) == (10, 15, 20, 30, 40, 50)  # long sentences keep the fine buckets


# ---------------------------------------------------------------- sections are data sets, models are configurations

def resolved_recipe(run: Path, *, data_dir: str | None = None, lr: float = 1e-3, label: str = "lstm",
                    dataset_options: dict[str, Any] | None = None, recipe: str = "agnews",
                    entry_id: str | None = None) -> None:
    """Give a run folder the resolved recipe.yaml the engine writes (what a report reads a run's settings from)."""
    import yaml

    settings = {"recipe": recipe, "label": label, "model": label, "seed": 1, "model_options": {},
                "task": {"name": "classification", "dataset": "text_files", "data_dir": data_dir,
                         "dataset_options": dataset_options or {"train": "train.csv", "test": "test.csv"},
                         "options": {}, **({"id": entry_id} if entry_id else {})},
                "train": {"lr": lr, "epochs": 3, "progress": False}}
    (run / "recipe.yaml").write_text(yaml.safe_dump(settings))


def test_two_data_sets_of_one_loader_are_two_sections(tmp_path: Path) -> None:
    for recipe, data_dir, acc in (("trec", "data/trec", 0.85), ("sst", "data/sst", 0.59)):
        run = make_run(tmp_path / "runs", model="lstm", seed=1, test={"accuracy": acc}, recipe=recipe,
                       dataset="text_files")
        resolved_recipe(run, data_dir=data_dir, recipe=recipe)
    out = tmp_path / "report"
    report.write_report([tmp_path / "runs"], out, formats=("md",))
    md = (out / "report.md").read_text()
    assert "## classification — text_files (data/trec)" in md and "## classification — text_files (data/sst)" in md
    assert "| lstm | 1 | **0.8500** |" not in md and "| lstm | 1 | 0.8500 |" in md and "| lstm | 1 | 0.5900 |" in md
    assert "| 1 1 |" not in md and "± 0.1838" not in md  # never "seeds 1 1" averaging the two data sets
    summary = report.summarize([tmp_path / "runs"], tmp_path / "summary").read_text()
    assert summary.count("## classification — text_files (data/") == 2 and "| 1 1 |" not in summary
    # the same folder with other dataset options is another data set, and its title says how it differs
    run = make_run(tmp_path / "more", model="lstm", seed=1, test={"accuracy": 0.7}, recipe="trec2",
                   dataset="text_files")
    resolved_recipe(run, data_dir="data/trec", dataset_options={"train": "train.csv", "test_size": 0.2})
    runs = report.load_runs([tmp_path / "runs", tmp_path / "more"])[0]
    titles = sorted({r["section_title"] for r in runs})
    assert len(titles) == 3 and any("test_size=0.2" in t for t in titles), titles
    # a task entry with an id of its own: the section is titled by it
    run = make_run(tmp_path / "named", model="lstm", seed=1, test={"accuracy": 0.6}, recipe="mix", dataset="text_files")
    resolved_recipe(run, data_dir="data/questions", entry_id="questions")
    titles = {r["section_title"] for r in report.load_runs([tmp_path / "named"])[0]}
    assert titles == {"questions: classification — text_files (data/questions)"}, titles


def test_two_configurations_of_one_label_are_not_averaged(tmp_path: Path) -> None:
    for recipe, lr, acc in (("a", 1e-3, 0.80), ("b", 3e-3, 0.90)):
        run = make_run(tmp_path / "runs", model="lstm", seed=1, test={"accuracy": acc}, recipe=recipe)
        resolved_recipe(run, lr=lr, recipe=recipe)
    for recipe in ("c", "d"):  # one configuration run by two recipes with the same seed: not two seeds of one
        run = make_run(tmp_path / "runs", model="lstm", seed=1, test={"accuracy": 0.85}, recipe=recipe)
        resolved_recipe(run, lr=0.01, recipe=recipe)
    old = make_run(tmp_path / "old", model="bert", seed=1, test={"accuracy": 0.7}, settings_hash="aaaaaaaaaaaa")
    (old / "recipe.yaml").unlink()
    make_run(tmp_path / "old2", model="bert", seed=1, test={"accuracy": 0.9}, settings_hash="bbbbbbbbbbbb")
    runs = report.load_runs([tmp_path / "runs", tmp_path / "old", tmp_path / "old2"])[0]
    names = sorted(r["model"] for r in runs)
    assert names == ["bert (settings aaaaaaaaaaaa)", "bert (settings bbbbbbbbbbbb)", "lstm (lr=0.001)",
                     "lstm (lr=0.003)", "lstm (lr=0.01, recipe c)", "lstm (lr=0.01, recipe d)"], names
    assert {r["model_label"] for r in runs} == {"lstm", "bert"} and all(len(r["settings_hash"]) == 12 for r in runs)
    agg = report_tables.aggregate(report_tables.results_frame(runs))
    assert set(agg["seeds"]) == {"1"} and set(agg["n_seeds"]) == {1}
    out = tmp_path / "report"
    report.write_report([tmp_path / "runs"], out, formats=("md",))
    md = (out / "report.md").read_text()
    assert "| lstm (lr=0.003) | 1 | **0.9000** |" in md and "| lstm (lr=0.001) | 1 | 0.8000 |" in md


def test_run_warnings_are_shown_with_their_run(tmp_path: Path) -> None:
    make_run(tmp_path / "runs", model="lstm", seed=2, test={"accuracy": 0.5},
             warnings=["still improving when training stopped: validation accuracy 0.40 -> 0.50 -> 0.60"])
    make_run(tmp_path / "runs", model="bert", seed=1, test={"accuracy": 0.9})
    out = tmp_path / "report"
    report.write_report([tmp_path / "runs"], out, formats=("md",))
    md = (out / "report.md").read_text()
    assert "### Warnings\n\n- lstm, seed 2: still improving when training stopped" in md
    summary = report.summarize([tmp_path / "runs"], tmp_path / "summary").read_text()
    assert "- lstm, seed 2: still improving" in summary and "bert, seed 1:" not in summary
