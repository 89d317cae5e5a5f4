"""Every run in a process of its own: a run that raises or dies fails alone (failure.json, the others finish and
are reported, nlpkit run names it and exits non-zero); runs of other precisions share a recipe; a run's peak
memory is its own; results.json records its provenance; a run folder's recipe.yaml re-makes that run."""

import hashlib
import json

import pytest
import yaml
from click.testing import CliRunner
from training_utils import CRASHY

from nlpkit.cli import main
from nlpkit.run.folders import run_status
from nlpkit.testing import install_package, one_module_plugin, plugins_on_path

TINY = "vocab_size: 200, embedding_dim: 8, hidden_size: 8"
RECIPE = f"""\
name: crash
output: {{out}}/runs
reports: {{out}}/reports
task: {{{{name: classification, dataset: toy_topics, dataset_options: {{{{train_size: 64, eval_size: 16}}}}}}}}
models:
  lstm: {{{{{TINY}}}}}
  boom: {{{{model: crashy, crash: raise, {TINY}}}}}
  dies: {{{{model: crashy, crash: exit, {TINY}}}}}
  killed: {{{{model: crashy, crash: sigkill, {TINY}}}}}
train: {{{{epochs: 1, batch_size: 16, log_every: 1, progress: false, precision: fp32}}}}
"""


@pytest.fixture
def crashy(tmp_path):
    """The test-only model plugin 'crashy', installed where nlpkit (and each run's own process) finds it."""
    package = one_module_plugin(tmp_path / "src" / "crashy_model", "crashy_model", CRASHY)
    install_package(package, tmp_path / "site")
    with plugins_on_path(tmp_path / "site"):
        yield


def test_a_run_that_raises_or_dies_fails_alone_and_is_named(crashy, tmp_path, monkeypatch):
    recipe = tmp_path / "crash.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path))
    runs = tmp_path / "runs" / "crash"
    result = CliRunner().invoke(main, ["run", str(recipe)])
    assert result.exit_code == 2, result.output
    assert "3 of 4 runs failed" in result.output
    assert "classification-boom-seed1: RuntimeError: injected failure at training step 3\n" in result.output
    assert "second line" not in result.output.split("runs failed")[1], "one line per failed run"
    assert "classification-dies-seed1: process died with exit code 7" in result.output
    assert "classification-killed-seed1: process died with signal 9 (SIGKILL)" in result.output
    assert "Traceback" not in result.output

    assert run_status(runs / "classification-lstm-seed1") == "finished"
    failures = {name: json.loads((runs / f"classification-{name}-seed1" / "failure.json").read_text())
                for name in ("boom", "dies", "killed")}
    assert failures["boom"]["type"] == "RuntimeError" and "step 3" in failures["boom"]["error"]
    assert "raise RuntimeError" in failures["boom"]["traceback"]
    assert failures["dies"]["type"] == "ProcessDied" and failures["killed"]["error"].endswith("(SIGKILL)")
    for name in ("boom", "dies", "killed"):
        assert run_status(runs / f"classification-{name}-seed1") == "failed"
    summary = (tmp_path / "reports" / "crash" / "summary.md").read_text()
    assert "| lstm | 1 |" in summary and "boom" not in summary  # reported over the finished run
    assert (tmp_path / "reports" / "crash" / "report.md").exists()

    monkeypatch.setenv("CRASHY_OFF", "1")  # the cause is fixed: the same runs run again, their failure.json goes
    again = CliRunner().invoke(main, ["run", str(recipe)])
    assert again.exit_code == 0, again.output
    assert again.output.count("finished, skipping") == 1
    for name in ("boom", "dies", "killed"):
        folder = runs / f"classification-{name}-seed1"
        assert run_status(folder) == "finished" and not (folder / "failure.json").exists()


MIXED = """\
name: mixed
output: {out}/runs
reports: {out}/reports
task: {{name: classification, dataset: toy_topics, data_dir: {data}, dataset_options: {{train_size: 48, eval_size: 16}}}}
models:
  lstm: {{vocab_size: 200, embedding_dim: 8, hidden_size: 8, precision: fp32}}
  attention: {{vocab_size: 200, embedding_dim: 8, hidden_size: 8, attention_size: 4, precision: bf16}}
train: {{epochs: 1, batch_size: 16, log_every: 1, progress: false}}
"""


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """One recipe, an fp32 and a bf16 run (bf16 is emulated on CPUs without it: slow, fine for 3 steps). The
    data folder holds files only for provenance to record (toy_topics generates its examples)."""
    root = tmp_path_factory.mktemp("mixed")
    data = root / "data"
    (data / "sub").mkdir(parents=True)
    (data / "notes.txt").write_text("toy data made by the plugin\n")
    (data / "sub" / "extra.bin").write_bytes(bytes(range(256)) * 3)
    recipe = root / "mixed.yaml"
    recipe.write_text(MIXED.format(out=root, data=data))
    result = CliRunner().invoke(main, ["run", str(recipe)])
    assert result.exit_code == 0, result.output
    return root, data


def test_a_recipe_mixing_fp32_and_bf16_runs_finishes(mixed):
    root, _ = mixed
    precisions = {m: json.loads((root / "runs" / "mixed" / f"classification-{m}-seed1" / "results.json")
                                .read_text())["precision"] for m in ("lstm", "attention")}
    assert precisions == {"lstm": "fp32", "attention": "bf16"}


def test_results_record_provenance_settings_hash_and_memory_source(mixed):
    root, data = mixed
    folder = root / "runs" / "mixed" / "classification-lstm-seed1"
    res = json.loads((folder / "results.json").read_text())
    saved = yaml.safe_load((folder / "recipe.yaml").read_text())
    prov = res["provenance"]
    assert res["settings_hash"] == prov["settings_hash"] == saved["settings_hash"]
    assert len(res["settings_hash"]) == 12
    assert prov["git"] is None or (len(prov["git"]["commit"]) == 40 and isinstance(prov["git"]["dirty"], bool))
    assert prov["precision"] == "fp32" and prov["device"] == res["device"] and prov["torch_threads"] >= 1
    assert set(prov["cpu_flags"]) == {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}
    assert {"torch", "accelerate", "nlpkit"} <= set(prov["versions"]) and prov["command"]
    files = {f["path"]: f for f in prov["data"]["files"]}
    assert prov["data"]["source"] == "local" and set(files) == {"notes.txt", "sub/extra.bin"}
    extra = data / "sub" / "extra.bin"
    assert files["sub/extra.bin"] == {"path": "sub/extra.bin", "bytes": 768,
                                      "sha256": hashlib.sha256(extra.read_bytes()).hexdigest()}
    assert "run's own process" in res["peak_memory_measured"] and res["peak_memory_mb"] > 0


def test_a_run_folders_recipe_yaml_re_makes_that_run(mixed, tmp_path):
    root, _ = mixed
    folder = root / "runs" / "mixed" / "classification-attention-seed1"
    again = CliRunner().invoke(main, ["run", str(folder / "recipe.yaml"), "--set", f"output={tmp_path}/runs",
                                      "--set", f"reports={tmp_path}/reports"])
    assert again.exit_code == 0, again.output
    assert "1/1" in again.output
    first = json.loads((folder / "results.json").read_text())
    second = json.loads((tmp_path / "runs" / "mixed" / folder.name / "results.json").read_text())
    assert second["settings_hash"] == first["settings_hash"] and second["precision"] == "bf16"
    assert second["test"] == first["test"] and second["validation"] == first["validation"]


def test_data_provenance_hashes_the_files_options_name_once_per_version(tmp_path, monkeypatch):
    from nlpkit.run import provenance

    train = tmp_path / "train.csv"
    train.write_text("text,label\na b,x\n")
    monkeypatch.chdir(tmp_path)
    calls = []
    real = provenance.hashlib.sha256
    monkeypatch.setattr(provenance.hashlib, "sha256", lambda: calls.append(1) or real())
    first = provenance.data_provenance("text_files", None, {"train": "train.csv", "text": ["title", "body"]})
    again = provenance.data_provenance("text_files", None, {"train": "train.csv"})
    assert first["source"] == "local" and [f["path"] for f in first["files"]] == ["train.csv"]
    assert first["files"] == again["files"] and len(calls) == 1, "a file is hashed once per (path, size, mtime)"
    train.write_text("text,label\na b,y\nc d,x\n")  # changed: hashed again
    changed = provenance.data_provenance("text_files", None, {"train": "train.csv"})
    assert changed["files"][0]["sha256"] == real(train.read_bytes()).hexdigest() and len(calls) == 2
    assert provenance.data_provenance("ag_news", None, {}, hub_id="ag_news")["source"] == "hub"
    assert provenance.data_provenance("toy", None, {"size": 3})["source"].startswith("generated")


def test_peak_memory_starts_from_the_runs_own_high_water_mark():
    import torch

    from nlpkit.train.hardware import PeakMemory, peak_rss_mb

    big = torch.ones(300 * 2**20 // 4)  # 300 MB touched before "the run": a previous run's peak
    del big
    before = peak_rss_mb()
    memory = PeakMemory().start()
    cpu = torch.device("cpu")
    if not memory.reset:
        pytest.skip("this kernel has no resettable VmHWM (/proc/self/clear_refs)")
    assert memory.mb(cpu) < before - 200, (memory.mb(cpu), before)
    assert "reset when the run started" in memory.how(cpu) and "shared with other runs" in memory.how(cpu)
    held = torch.ones(100 * 2**20 // 4)
    assert memory.mb(cpu) >= 100 and held.sum() > 0  # what the run itself touches counts


def test_set_train_key_that_every_entry_sets_itself_warns(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: {name: classification, dataset: toy_topics}\n"
                      "models: {lstm: {lr: 0.01}, attention: {lr: 0.02}, bert: {batch_size: 8}}\n")
    partial = CliRunner().invoke(main, ["run", str(recipe), "--dry-run", "--set", "train.lr=0.5"])
    assert partial.exit_code == 0, partial.output
    assert "--set train.lr=0.5 does not reach them: model entries lstm, attention set lr" in partial.output
    recipe.write_text(recipe.read_text().replace("bert: {batch_size: 8}", "bert: {lr: 3.0e-5}"))
    none = CliRunner().invoke(main, ["run", str(recipe), "--dry-run", "--set", "train.lr=0.5"])
    assert "--set train.lr=0.5 changes nothing: model entries lstm, attention, bert set lr" in none.output
    quiet = CliRunner().invoke(main, ["run", str(recipe), "--dry-run", "--set", "train.epochs=1"])
    assert "Warning" not in quiet.output


def test_a_finished_run_with_other_settings_moves_aside_and_the_others_are_reused(mixed):
    root, _ = mixed
    recipe = root / "mixed.yaml"
    runs = root / "runs" / "mixed"
    lstm = runs / "classification-lstm-seed1"
    old = json.loads((lstm / "results.json").read_text())["settings_hash"]
    plan = CliRunner().invoke(main, ["run", str(recipe), "--dry-run", "--set", "models.lstm.lr=0.005"])
    assert f"holds a run with other settings ({old}): moves aside" in plan.output
    result = CliRunner().invoke(main, ["run", str(recipe), "--set", "models.lstm.lr=0.005"])
    assert result.exit_code == 0, result.output
    assert "classification-attention-seed1: finished, skipping" in result.output
    assert f"the finished run there was made with other settings ({old}" in result.output
    aside = runs / f"classification-lstm-seed1@{old}"
    kept = json.loads((aside / "results.json").read_text())
    new = json.loads((lstm / "results.json").read_text())
    assert kept["settings_hash"] == old and new["settings_hash"] != old
    assert yaml.safe_load((lstm / "recipe.yaml").read_text())["train"]["lr"] == 0.005
    again = CliRunner().invoke(main, ["run", str(recipe), "--set", "models.lstm.lr=0.005"])
    assert again.output.count("finished, skipping") == 2 and "moved" not in again.output
    back = CliRunner().invoke(main, ["run", str(recipe)])  # the first settings again: their run is reused
    assert back.exit_code == 0, back.output
    assert f"is back from {aside}" in back.output and back.output.count("finished, skipping") == 2
    assert json.loads((lstm / "results.json").read_text()) == kept and not aside.exists()
    assert (runs / f"classification-lstm-seed1@{new['settings_hash']}").is_dir()
