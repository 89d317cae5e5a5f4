"""Helpers for the training tests (resume, distributed, jobs): tiny recipes, runs that start from one
shared initial model, and what two runs must agree on.

Why share the initial model: a subword vocabulary fitted twice, in two processes, may number its tokens
differently (the tokenizers library breaks frequency ties in hash order), so two separate runs start
from different models. Within one run nlpkit saves its initial model beside the checkpoints (DDP
processes and a resumed run load it); to compare two separate runs, the tests give both the same one.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from accelerate.utils import set_seed
from safetensors.torch import load_file

from nlpkit.config.recipe import load_recipe
from nlpkit.data.loading import subset
from nlpkit.plugins import registry
from nlpkit.run.engine import load_splits

PYTHON = sys.executable
TIMING = {"examples_per_s"}  # metrics.jsonl fields that may differ between equal runs


# A test-only model plugin (one module): the lstm, failing at its third training step in the way its option
# `crash` says (unless CRASHY_OFF is set), for tests of runs that raise or die.
CRASHY = '''\
import os
import signal

import nlpkit
from nlpkit_plugins.models.lstm import LSTMModel
from nlpkit_plugins.models.shared.options import RecurrentOptions


class CrashyOptions(RecurrentOptions):
    crash: str = "raise"  # how training step 3 fails: raise | exit (os._exit) | sigkill


class CrashyModel(LSTMModel):
    """The lstm, failing at its third training step (unless CRASHY_OFF is set): a test-only model."""

    name = "crashy"
    serves = ("classification",)
    per_kind = {}
    Options = CrashyOptions

    def forward(self, ids, lengths, labels=None):
        if self.training and not os.environ.get("CRASHY_OFF"):
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls == 3:
                if self.options.crash == "exit":
                    os._exit(7)
                if self.options.crash == "sigkill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError("injected failure at training step 3\\nsecond line of the message")
        return super().forward(ids, lengths, labels)


@nlpkit.hookimpl
def register_models(register):
    register(CrashyModel)
'''


def write_recipe(folder: Path, text: str) -> Path:
    path = Path(folder) / "recipe.yaml"
    path.write_text(text)
    return path


def share_initial_model(recipe: Path, outputs: list[Path]) -> None:
    """Build each run's model once (as the engine does) and save it as the initial model of the same run
    under every output folder, so those runs start identical."""
    reg = registry()
    for spec in load_recipe(recipe).runs:
        task, examples = load_splits(spec.task, reg)
        model_cls = reg.model(spec.model)
        set_seed(spec.seed)
        model = model_cls.create(task.spec, model_cls.Options(**spec.model_options),
                                 subset(examples["train"], spec.train.max_train_examples, spec.seed, spec.train.subset))
        for out in outputs:
            model.save(Path(out) / spec.recipe / spec.name / "checkpoints" / "model")


def run_folder(output: Path, recipe: str = "tiny", name: str = "classification-lstm-seed1") -> Path:
    return Path(output) / recipe / name


def outcome(folder: Path) -> dict:
    """What must be equal between two runs that should be the same: test and validation metrics, the best
    step, every logged loss and metric, the final weights."""
    res = json.loads((folder / "results.json").read_text())
    logs = [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (folder / "metrics.jsonl").read_text().splitlines()]
    weights = {k: v.tolist() for k, v in load_file(str(folder / "model" / "model.safetensors")).items()}
    return {"test": res["test"], "validation": res["validation"], "best_step": res["best_step"],
            "steps": res["steps"], "logs": logs, "weights": weights}


def env(**extra: str) -> dict[str, str]:
    """The environment for a child nlpkit: one thread (as in the parent, so float sums agree), no progress."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


def signal_at_step(step: int, sig: int) -> None:
    """In the process that runs a run: send ``sig`` right after the train log line of ``step``. SIGKILL is a
    crash of the machine at an exact step, so it takes ``nlpkit run`` (the parent) down too; any other signal
    goes to the run's own process, as a polite stop sent to it. Installed through ``nlpkit.run.pool.CHILD_SETUP``
    (each run has a process of its own, so a patch in the test's process would not reach it)."""
    from nlpkit.train.log import MetricsLog

    log = MetricsLog.__call__

    def log_then_signal(self, **row):
        log(self, **row)
        if row.get("split") == "train" and row.get("step") == step:
            if sig == signal.SIGKILL:
                os.kill(os.getppid(), sig)
            os.kill(os.getpid(), sig)

    MetricsLog.__call__ = log_then_signal


# A driver for a child nlpkit: makes each run's process send ``SIG`` to itself right after the train log line of
# step ``STEP`` (see signal_at_step), then runs the nlpkit command line.
SIGNAL_AT_STEP = f"""
import functools, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from nlpkit.run import pool as jobs
from training_utils import signal_at_step

jobs.CHILD_SETUP.append(functools.partial(signal_at_step, int(sys.argv[1]), int(sys.argv[2])))
from nlpkit.cli import main
main(sys.argv[3:])
"""


def signal_run_at_step(name: str, step: int, sig: int) -> None:
    """As :func:`signal_at_step`, for the run called ``name`` only (its metrics.jsonl is under its folder): a
    launcher's jobs all run the same setup, and one of them is to be preempted. The process sends ``sig`` to
    itself, as a cluster sends a job its preemption signal."""
    from nlpkit.train.log import MetricsLog

    log = MetricsLog.__call__

    def log_then_signal(self, **row):
        log(self, **row)
        if self.path.parent.name == name and row.get("split") == "train" and row.get("step") == step:
            os.kill(os.getpid(), sig)

    MetricsLog.__call__ = log_then_signal
