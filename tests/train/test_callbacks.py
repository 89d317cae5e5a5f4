"""``train`` tells extra callbacks of every named event, after the built-in ones, and a callback can end training
the way early stopping does (lowering ``position.total`` at an evaluation)."""

from collections import Counter

import torch

from nlpkit.config.recipe import TaskEntry
from nlpkit.plugins import registry
from nlpkit.run.engine import load_splits
from nlpkit.train import loop as training
from nlpkit.train.callbacks import Callback, TrainState
from nlpkit.train.log import MetricsLog
from nlpkit.train.options import TrainOptions


class Counting(Callback):
    """Counts events; records the step of each and the metrics.jsonl lines written by the time it hears of them."""

    def __init__(self, log_path, stop_at: int | None = None):
        self.seen: Counter = Counter()
        self.steps: list[tuple[str, int]] = []
        self.log_path, self.stop_at = log_path, stop_at

    def _saw(self, event: str, state: TrainState) -> None:
        self.seen[event] += 1
        self.steps.append((event, state.position.step))

    def on_train_start(self, state):
        self._saw("train_start", state)

    def on_step_end(self, state):
        self._saw("step_end", state)

    def on_log(self, state, row):
        self._saw("log", state)
        assert set(row) >= {"epoch", "loss", "lr", "examples_per_s"}

    def on_evaluate(self, state, metrics):
        self._saw("evaluate", state)
        # the built-in MetricsLogger ran first: this evaluation's row is already in metrics.jsonl
        assert '"split": "validation"' in self.log_path.read_text().splitlines()[-1]
        if state.position.step == self.stop_at:
            state.position.total = state.position.step

    def on_checkpoint(self, state, folder):
        self._saw("checkpoint", state)
        assert (folder / f"step-{state.position.step:08d}.json").exists()  # written before extra callbacks hear

    def on_train_end(self, state):
        self._saw("train_end", state)


def fit(tmp_path, options: TrainOptions, callback: Callback, checkpoints=None):
    reg = registry()
    task, examples = load_splits(TaskEntry(name="classification", dataset="toy_topics",
                                           dataset_options={"train_size": 32, "eval_size": 8}), reg)
    model_cls = reg.model("lstm")
    torch.manual_seed(0)
    model = model_cls.create(task.spec, model_cls.Options(vocab_size=100, embedding_dim=8, hidden_size=8),
                             examples["train"])
    train = [model.encode(e) for e in examples["train"]]
    val = [model.encode(e) for e in examples["validation"]]
    accelerator, precision = training.make_accelerator(options, model_cls)
    return training.train(model, task, train, val, examples["validation"], options, 1,
                          MetricsLog(tmp_path / "metrics.jsonl"), accelerator, precision, checkpoints,
                          callbacks=[callback])


def test_a_custom_callback_hears_every_event(tmp_path):
    counting = Counting(tmp_path / "metrics.jsonl")
    options = TrainOptions(epochs=2, batch_size=8, lr=0.05, log_every=2, eval_every=4, checkpoint_every=3,
                           progress=False)
    result = fit(tmp_path, options, counting, tmp_path / "checkpoints")
    assert result.steps == 8
    assert counting.seen == Counter(train_start=1, step_end=8, log=4, evaluate=2, checkpoint=3, train_end=1)
    assert counting.steps[0] == ("train_start", 0) and counting.steps[-1] == ("train_end", 8)
    assert [s for e, s in counting.steps if e == "checkpoint"] == [3, 6, 8]


def test_a_callback_can_end_training_at_an_evaluation(tmp_path):
    counting = Counting(tmp_path / "metrics.jsonl", stop_at=2)
    options = TrainOptions(epochs=2, batch_size=8, lr=0.05, eval_every=1, progress=False)
    result = fit(tmp_path, options, counting)
    assert result.steps == 2 and counting.seen["step_end"] == 2 and counting.seen["train_end"] == 1


def test_min_steps_trains_more_epochs_of_small_data_and_max_steps_still_wins(tmp_path):
    """32 examples in batches of 8: one epoch is 4 steps; min_steps 10 trains into a third epoch."""
    options = TrainOptions(epochs=1, batch_size=8, lr=0.05, min_steps=10, progress=False)
    result = fit(tmp_path, options, Counting(tmp_path / "metrics.jsonl"))
    assert result.steps == 10 and result.epochs == 2.5
    options = TrainOptions(epochs=1, batch_size=8, lr=0.05, min_steps=10, max_steps=6, progress=False)
    assert fit(tmp_path, options, Counting(tmp_path / "metrics.jsonl")).steps == 6
    options = TrainOptions(epochs=2, batch_size=8, lr=0.05, min_steps=3, progress=False)
    assert fit(tmp_path, options, Counting(tmp_path / "metrics.jsonl")).steps == 8  # epochs give more: epochs
