"""Bad input, class by class (issue #15): each is an NlpkitError naming what is wrong and where, answered
before anything is written, and nothing is ever written outside a recipe's output and report folders."""

from __future__ import annotations

import errno
import json
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from nlpkit import Model, TaskSpec
from nlpkit.cli import main
from nlpkit.config.recipe import load_recipe, parse_recipe
from nlpkit.config.yaml_lines import MAX_VALUES
from nlpkit.errors import NlpkitError
from nlpkit.files import DiskError, write_json, write_yaml
from nlpkit.report.runs import load_runs
from nlpkit.run.folders import is_finished, run_lock, run_status
from nlpkit.train import checkpoint as ckpt
from nlpkit.train import log as metrics_log
from nlpkit.train.log import MetricsLog
from nlpkit.train.loop import start_model
from nlpkit.train.options import TrainOptions

GOOD = """\
name: demo
task: {name: classification, dataset: toy_topics}
models:
  lstm: {epochs: 1}
train: {batch_size: 8}
seeds: [1]
"""


def write(tmp_path, text: str | bytes, name: str = "recipe.yaml"):
    path = tmp_path / name
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def error_of(path, overrides=()) -> str:
    with pytest.raises(NlpkitError) as err:
        load_recipe(path, list(overrides))
    return str(err.value)


# --- 1. names that become paths ---------------------------------------------------------------------------

BAD_NAMES = ["..", "../../x", "/tmp/x", "a/b", "a\\b", "", ".hidden", "x y", "-x", "a" * 101, "a\x00b"]


@pytest.mark.parametrize("bad", BAD_NAMES)
@pytest.mark.parametrize("key", ["name", "label", "task", "dataset"])
def test_names_that_become_paths_must_be_plain(tmp_path, bad, key):
    quoted = '"' + bad.replace("\\", "\\\\").replace("\x00", "\\0") + '"'
    text = {
        "name": GOOD.replace("name: demo", f"name: {quoted}"),
        "label": GOOD.replace("  lstm: {epochs: 1}", f"  lstm: {{epochs: 1}}\n  {quoted}: {{model: lstm}}"),
        "task": GOOD.replace("name: classification", f"name: {quoted}"),
        "dataset": GOOD.replace("dataset: toy_topics", f"dataset: {quoted}"),
    }[key]
    path = write(tmp_path, text)
    msg = error_of(path)
    line = {"name": 1, "label": 5, "task": 2, "dataset": 2}[key]
    assert f"{path}, line {line}" in msg and "is not a plain name" in msg and "letters, digits" in msg, msg
    assert list(tmp_path.iterdir()) == [path]  # nothing created


def test_a_file_stem_that_is_not_a_plain_name_asks_for_a_name_key(tmp_path):
    path = write(tmp_path, GOOD.replace("name: demo\n", ""), name="my recipe.yaml")
    assert "add a 'name:' key" in error_of(path)


def test_plain_names_keep_every_folder_inside_output_and_reports(tmp_path):
    text = GOOD.replace("name: demo", "name: v1.2_final-run") + f"output: {tmp_path}/out\nreports: {tmp_path}/rep\n"
    recipe = load_recipe(write(tmp_path, text))
    for spec in recipe.runs:
        assert (tmp_path / "out") in spec.folder.resolve().parents
    assert recipe.reports.resolve().parent == (tmp_path / "rep")


# --- 2. YAML beyond the happy path -------------------------------------------------------------------------

def billion_laughs(levels: int = 9) -> str:
    rows = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        rows.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return GOOD + "\n".join(rows) + "\n"


def test_nested_aliases_are_refused_at_once_without_memory_growth(tmp_path):
    path = write(tmp_path, billion_laughs())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    msg = error_of(path)
    assert time.perf_counter() - start < 2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KB
    assert f"{path}, line 12" in msg and "aliases expand" in msg and f"{MAX_VALUES:,}" in msg
    # a few ordinary aliases still work
    shared = GOOD.replace("  lstm: {epochs: 1}", "  lstm: &t {epochs: 1}\n  attention: *t")
    assert [r.label for r in load_recipe(write(tmp_path, shared)).runs] == ["lstm", "attention"]


def test_recursive_alias_is_refused(tmp_path):
    msg = error_of(write(tmp_path, GOOD + "loop: &a [1, *a]\n"))
    assert "recursive alias" in msg and "line 7" in msg


def test_a_repeated_key_names_both_lines(tmp_path):
    path = write(tmp_path, GOOD.replace("  lstm: {epochs: 1}", "  lstm: {epochs: 1}\n  lstm: {epochs: 2}"))
    assert f"{path}, line 5: key 'models.lstm' is given twice (lines 4 and 5)" in error_of(path)
    path = write(tmp_path, GOOD.replace("batch_size: 8}", "batch_size: 8, batch_size: 4}"))
    assert "key 'train.batch_size' is given twice (lines 5 and 5)" in error_of(path)


def test_a_recipe_that_is_not_utf8_text_names_file_and_line(tmp_path):
    path = write(tmp_path, GOOD.encode().replace(b"demo", b"d\xe9mo"))
    assert f"{path}, line 1: not UTF-8 text (byte 0xe9" in error_of(path)
    path = write(tmp_path, GOOD + "x: \x01\n")
    assert f"{path}: not valid YAML" in error_of(path)
    assert "not a recipe file" in error_of(tmp_path)


def test_set_values_and_paths_are_blamed_on_the_set(tmp_path):
    path = write(tmp_path, GOOD)
    assert error_of(path, ["train.lr=[1"]).startswith("--set train.lr=[1: not valid YAML")
    assert "--set train.lr=*x: not valid YAML" in error_of(path, ["train.lr=*x"])
    msg = error_of(path, ["models.lsmt.lr=1"])  # creates an entry the recipe does not have
    assert "--set models.lsmt.lr=1: Can't find 'lsmt'" in msg and f"{path}" not in msg
    msg = error_of(path, ["train.batch_size.x=1"])
    assert "--set train.batch_size.x=1: 'train.batch_size' holds int 8, not keys" in msg
    assert "not a key path" in error_of(path, ["train..lr=1"])
    assert "not a key path" in error_of(path, ["=1"])


# --- 3. numbers ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key,value", [
    ("batch_size", 0), ("epochs", 0), ("epochs", -1), ("lr", -1e-3), ("lr", ".nan"), ("lr", ".inf"),
    ("log_every", 0), ("grad_accum", 0), ("warmup", 1), ("warmup", -0.1), ("max_steps", 0), ("threads", 0),
    ("eval_batch_size", 0), ("max_tokens", -5), ("eval_every", 0), ("early_stopping", 0), ("grad_clip", 0),
    ("weight_decay", -1), ("checkpoint_every", 0), ("keep_checkpoints", 0), ("max_train_examples", 0),
    ("max_eval_examples", 0), ("precision", "fp8"), ("device", '""'),
])
@pytest.mark.parametrize("where", ["train", "model"])
def test_every_training_number_has_its_range(tmp_path, key, value, where):
    text = (GOOD.replace("{batch_size: 8}", f"{{{key}: {value}}}") if where == "train"
            else GOOD.replace("{epochs: 1}", f"{{{key}: {value}}}"))
    path = write(tmp_path, text)
    msg = error_of(path)
    shown = f"train.{key}" if where == "train" else f"models.lstm.{key}"
    assert f"{path}, line {5 if where == 'train' else 4}: '{shown}'" in msg, msg
    assert list(tmp_path.iterdir()) == [path]


def test_seeds_are_distinct_non_negative_integers(tmp_path):
    for seeds in ("[]", "[1, 1]", "[-1]", "[true]", "[1.5]"):
        assert "seeds" in error_of(write(tmp_path, GOOD.replace("seeds: [1]", f"seeds: {seeds}")))
        entry = GOOD.replace("{epochs: 1}", f"{{epochs: 1, seeds: {seeds}}}")
        assert "'models.lstm.seeds' must be a list of integers" in error_of(write(tmp_path, entry))


def test_every_training_key_is_described():
    for name, info in TrainOptions.model_fields.items():
        assert info.description and len(info.description) > 20, name


def test_valid_edges_pass(tmp_path):
    text = GOOD.replace("batch_size: 8}", "batch_size: 1, warmup: 0, epochs: 0.5, grad_clip: null, threads: 1}")
    (run,) = parse_recipe(text, tmp_path / "r.yaml").runs
    assert run.train.batch_size == 1 and run.train.warmup == 0 and run.train.grad_clip is None


# --- 4. disk and run-folder faults ---------------------------------------------------------------------------

def _raise(code: int):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return fail


def test_a_full_disk_says_what_where_and_that_nothing_finished_was_harmed(tmp_path, monkeypatch):
    target = tmp_path / "run" / "results.json"
    write_json(target, {"test": {"accuracy": 0.9}})
    monkeypatch.setattr(os, "fsync", _raise(errno.ENOSPC))
    with pytest.raises(DiskError) as err:
        write_json(target, {"test": {"accuracy": 0.1}})
    msg = str(err.value)
    assert str(target) in msg and "the disk is full" in msg and "ENOSPC" in msg and "Nothing finished was harmed" in msg
    assert json.loads(target.read_text()) == {"test": {"accuracy": 0.9}}  # the old file is whole
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.json"]  # no temp file left


def test_a_read_only_folder_is_said_for_logs_locks_and_files(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    folder.mkdir()
    monkeypatch.setattr(metrics_log, "open", _raise(errno.EACCES), raising=False)  # MetricsLog's open
    with pytest.raises(DiskError, match=r"Could not write .*metrics.jsonl: permission denied"):
        MetricsLog(folder / "metrics.jsonl")(step=1, loss=0.5)
    monkeypatch.setattr(os, "open", _raise(errno.EROFS))
    with pytest.raises(DiskError, match=r"Could not create .*\.lock: the file system is read-only"):
        with run_lock(folder):
            pass
    monkeypatch.setattr(tempfile, "mkstemp", _raise(errno.EACCES))
    with pytest.raises(DiskError, match=r"Could not write .*results.json: permission denied"):
        write_json(folder / "results.json", {})


def test_a_full_disk_during_a_run_ends_in_a_message_not_a_traceback(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    recipe = write(tmp_path, GOOD.replace("train: {batch_size: 8}", "train: {max_steps: 2, batch_size: 8, progress: false}")
                   .replace("task: {name: classification, dataset: toy_topics}",
                            "task: {name: classification, dataset: toy_topics, "
                            "dataset_options: {train_size: 32, eval_size: 16}}")
                   + f"output: {out}/runs\nreports: {out}/reports\n")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(out)],
                             capture_output=True).returncode == 0
    try:
        if not mounted:  # no tmpfs here: the same fault, patched
            real = os.replace

            def replace(src, dst, *a, **k):
                if str(dst).endswith("predictions.jsonl"):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return real(src, dst, *a, **k)
            monkeypatch.setattr(os, "replace", replace)
        result = CliRunner().invoke(main, ["run", str(recipe)])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and result.exception.__class__ is SystemExit
        assert "Could not write" in result.output and "Nothing finished was harmed" in result.output
        assert "disk is full" in result.output
    finally:
        if mounted:
            subprocess.run(["umount", str(out)], check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "recipe.yaml"]  # nothing beside the output


@pytest.mark.parametrize("key", ["output", "reports"])
def test_an_output_folder_that_cannot_be_made_is_said_before_any_run_trains(tmp_path, key):
    (tmp_path / "blocker").write_text("a file, not a folder")  # below a file: unwritable even for root
    folders = {"output": tmp_path / "runs", "reports": tmp_path / "reports", key: tmp_path / "blocker" / "sub"}
    recipe = write(tmp_path, GOOD + f"output: {folders['output']}\nreports: {folders['reports']}\n")
    result = CliRunner().invoke(main, ["run", str(recipe)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "training" not in result.output and "runs failed" not in result.output, result.output
    assert f"Could not create {tmp_path / 'blocker' / 'sub'}" in result.output
    assert "is a file, not a folder" in result.output and "Nothing finished was harmed" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "recipe.yaml"]  # nothing created


def test_a_manifest_of_the_wrong_shape_is_skipped_and_the_resume_step_is_the_real_one(tmp_path, caplog):
    folder = tmp_path / "checkpoints"
    for step in (2, 4):
        ckpt.save(folder, step, {"x": torch.tensor([step])}, keep=5)
    for bad in ("[1, 2]", '{"step": 4}', '{"bytes": "many", "sha256": 1}', "null"):
        (folder / "step-00000004.json").write_text(bad)
        assert ckpt.latest_step(folder) == 2, bad
        manifest, state = ckpt.latest(folder)
        assert manifest.name == "step-00000002.json" and state["x"].item() == 2
    assert "Checkpoint skipped" in caplog.text


class _Tiny(Model):
    name = "tiny"
    serves = ("classification",)

    def __init__(self):
        super().__init__(TaskSpec("classification", ["a", "b"]), Model.Options())
        self.layer = torch.nn.Linear(2, 2)

    @classmethod
    def create(cls, spec, options, train):
        return cls()

    def save(self, folder):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "config.json").write_text('{"plugin": "tiny"}')

    @classmethod
    def load(cls, folder):
        json.loads((Path(folder) / "config.json").read_text())
        return cls()


def test_a_corrupt_saved_initial_model_restarts_the_run_cleanly(tmp_path, caplog):
    checkpoints = tmp_path / "checkpoints"
    ckpt.save(checkpoints, 3, {"x": torch.tensor([3])})
    (checkpoints / "model").mkdir()
    (checkpoints / "model" / "config.json").write_text('{"plugin": "ti')  # cut off
    created = []
    model = start_model(_Tiny, lambda: created.append(1) or _Tiny(), checkpoints, "cpu")
    assert isinstance(model, _Tiny) and created == [1]
    assert "cannot be loaded" in caplog.text and "starts over" in caplog.text
    assert ckpt.latest_step(checkpoints) is None  # the old checkpoints belonged to the corrupt model
    assert json.loads((checkpoints / "model" / "config.json").read_text()) == {"plugin": "tiny"}


BAD_RESULTS = ["", "   ", "{not json", "[1, 2]", "{}", '{"test": {}}', '{"test": [0.9]}', '"finished"']


@pytest.mark.parametrize("text", BAD_RESULTS)
def test_a_corrupt_results_json_is_not_finished_and_reports_skip_it(tmp_path, text, caplog, capsys):
    good = tmp_path / "runs" / "r" / "classification-lstm-seed1"
    bad = tmp_path / "runs" / "r" / "classification-lstm-seed2"
    write_json(good / "results.json", {"model": "lstm", "seed": 1, "test": {"accuracy": 0.8}})
    write_yaml(bad / "recipe.yaml", {"seed": 2})
    (bad / "results.json").write_text(text)
    assert is_finished(good) and not is_finished(bad) and run_status(bad) == "interrupted"
    assert f"{bad / 'results.json'} is " in caplog.text and "runs again" in caplog.text
    loaded, skipped = load_runs([tmp_path / "runs"])
    assert [r["seed"] for r in loaded] == [1] and bad.resolve() in skipped
    assert f"skipping run {bad.resolve()}: its results.json is" in capsys.readouterr().err


# --- 6. predict -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("predict")
    recipe = out / "tiny.yaml"
    recipe.write_text(GOOD.replace("name: demo", "name: tiny")
                      .replace("dataset: toy_topics}", "dataset: toy_topics, dataset_options: {train_size: 32, "
                               "eval_size: 8}}")
                      .replace("{epochs: 1}", "{vocab_size: 200, embedding_dim: 8, hidden_size: 8}")
                      .replace("{batch_size: 8}", "{max_steps: 2, batch_size: 8, progress: false}")
                      + f"output: {out}/runs\nreports: {out}/reports\n")
    result = CliRunner().invoke(main, ["run", str(recipe)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out / "runs" / "tiny" / "classification-lstm-seed1"


def _copy(run, tmp_path):
    import shutil

    return Path(shutil.copytree(run, tmp_path / "runs" / "r" / run.name))


def predict_cli(*args, input=None):
    result = CliRunner().invoke(main, ["predict", *map(str, args)], input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def test_predict_reads_arguments_stdin_and_files_and_prepares_for_final_inference(finished_run, tmp_path,
                                                                                    monkeypatch):
    told = []
    owners = [c for c in (Model, *_subclasses(Model)) if "prepare_inference" in c.__dict__]
    for cls in owners:
        monkeypatch.setattr(cls, "prepare_inference", lambda self, final: told.append(final))
    assert predict_cli(finished_run, "stocks fell").output.count("->") == 1
    assert told == [True]
    result = predict_cli(finished_run, "-", input="stocks fell\nthe team won\n")
    assert result.exit_code == 0 and result.output.count("->") == 2 and "the team won\n  ->" in result.output
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("one\ntwo\nthree\n")
    result = predict_cli(finished_run, "--file", inputs)
    assert result.exit_code == 0 and result.output.count("->") == 3
    assert predict_cli(finished_run, "--file", "-", input="x\n").output.count("->") == 1


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_predict_refuses_empty_inputs_each_by_where_it_came_from(finished_run, tmp_path):
    result = predict_cli(finished_run, "fine text", "", "   \t")
    assert result.exit_code == 2 and "->" not in result.output
    assert "argument 2: empty" in result.output and "argument 3: only whitespace" in result.output
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("one\n\n  \nfour\n")
    result = predict_cli(finished_run, "--file", inputs)
    assert result.exit_code == 2 and f"{inputs}, line 2: empty" in result.output and "line 3: only whitespace" in \
        result.output
    inputs.write_bytes(b"caf\xe9\n")
    assert f"{inputs}, line 1: not UTF-8" in predict_cli(finished_run, "--file", inputs).output
    assert "stdin, line 1: only whitespace" in predict_cli(finished_run, "-", input=" \n").output
    assert "No inputs" in predict_cli(finished_run).output


def test_predict_refuses_unfinished_runs_and_lists_a_recipes_runs(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    result = predict_cli(run.parent, "x")  # a recipe's folder: choose a run
    assert result.exit_code == 2 and "holds 1 finished runs, not one; choose one" in result.output
    assert str(run) in result.output
    assert str(run) in predict_cli(run.parent.parent, "x").output  # the output folder above recipes
    for text in (None, "", "[]"):
        if text is None:
            (run / "results.json").unlink()
        else:
            (run / "results.json").write_text(text)
        result = predict_cli(run, "x")
        assert result.exit_code == 2 and f"{run} is not a finished run" in result.output and "->" not in result.output


@pytest.mark.parametrize("damage", ["model.safetensors", "config.json"])
def test_predict_on_a_corrupt_model_names_the_file(finished_run, tmp_path, damage):
    run = _copy(finished_run, tmp_path)
    path = run / "model" / damage
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    result = predict_cli(run, "x")
    assert result.exit_code == 2 and str(path) in result.output, result.output
