"""What the training loop does besides stepping the optimizer, as callbacks on its named events.

The loop (nlpkit/train/loop.py) owns the schedule: it trains, and at each optimizer step says so (``on_step_end``),
then, when due, hands out the train log row (``on_log``), the validation metrics (``on_evaluate``) and the moment
to write a checkpoint (``on_checkpoint``); ``on_train_start`` and ``on_train_end`` frame the run. Everything that
reacts lives here, one concern per class, so each can be read (and tested) without the rest of the loop:

    MetricsLogger   metrics.jsonl rows                 ProgressBar    the tqdm bar
    BestWeights     best-so-far copy, restored at end  EarlyStopping  no improvement for N evaluations
    Checkpointer    the resumable checkpoint files     PluginHooks    the plugins' lifecycle hooks, RunContext.stop

All of them share one mutable :class:`TrainState`. Whatever a resumed run needs lives in its ``position`` and
``result`` (saved in checkpoints as they are), so callbacks keep no state of their own that resume could lose.
Callbacks run on every process (some act on the main one only) in list order; under DDP a callback that talks to
the other processes must do so at the same events on all of them. None may read a device tensor per step: that
would make the CPU wait for the GPU (tests/train/test_host_sync.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from tqdm.auto import tqdm

from nlpkit.contract import RunContext
from nlpkit.train import checkpoint as ckpt
from nlpkit.train.log import MetricsLog


@dataclass
class TrainResult:
    steps: int = 0
    epochs: float = 0.0
    train_seconds: float = 0.0
    examples: int = 0  # of the whole job (all processes)
    tokens: int = 0
    best_step: int = 0
    best_validation: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"
    device: str = "cpu"
    world_size: int = 1
    effective_batch_size: int | str = 0  # global examples per optimizer step (or "N tokens" with max_tokens)
    resumed_from: int = 0  # the checkpoint step this process started from (0: from scratch)
    stopped_early: str | None = None  # why a plugin ended training early (RunContext.stop), if one did


@dataclass
class Position:
    """Where the loop is; saved in checkpoints with the result so far."""

    step: int = 0
    epoch: int = 0
    next_batch: int = 0  # index in this epoch's batches
    total: int = 0  # steps to train (early stopping lowers it)
    running: float = 0.0  # summed mean loss since the last log line, and how many batches it sums
    running_n: int = 0
    best_metric: float | None = None
    bad_evals: int = 0


@dataclass
class TrainState:
    """The loop's state as callbacks see it. ``position`` and ``result`` are what a checkpoint saves; the rest is
    the live objects a callback may need (weights to copy, optimizer state to save) and per-event facts."""

    position: Position
    result: TrainResult
    model: torch.nn.Module  # unwrapped (no DDP): the weights to evaluate, copy and save
    optimizer: Any
    scheduler: Any
    accelerator: Accelerator
    running: torch.Tensor  # the running loss sum, on the device: read at log and checkpoint steps only
    best_state: dict[str, torch.Tensor] | None = None  # None: the live weights are the best (or none yet)
    epoch: float = 0.0  # fractional epoch of the current step, as logged
    improved: bool = False  # whether the latest evaluation was the best so far (BestWeights sets it)
    signum: int = 0  # a signal every process agreed on: checkpoint, then stop

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


class Callback:
    """One concern of the training loop; each method is an event, and does nothing unless overridden."""

    def on_train_start(self, state: TrainState) -> None:
        """Before the first step (of a resumed run too: ``state.position`` says where it resumes)."""

    def on_step_end(self, state: TrainState) -> None:
        """After each optimizer step (not after each accumulated micro-batch)."""

    def on_log(self, state: TrainState, row: dict[str, Any]) -> None:
        """A train log row (epoch, loss, lr, examples_per_s) at ``state.position.step``."""

    def on_evaluate(self, state: TrainState, metrics: dict[str, Any]) -> None:
        """Validation metrics at ``state.position.step``; lowering ``position.total`` to the step ends training."""

    def on_checkpoint(self, state: TrainState, folder: Path) -> None:
        """A checkpoint of ``state`` is due in ``folder`` (every N steps, at the end, or on a signal)."""

    def on_train_end(self, state: TrainState) -> None:
        """Training ended: finished, stopped early, or on a signal (``state.signum``, the run resumes later)."""


class MetricsLogger(Callback):
    """Rows of metrics.jsonl; a resumed run first drops what was logged after its checkpoint, which it repeats."""

    def __init__(self, log: MetricsLog, resume_at: int = 0):
        self.log, self.resume_at = log, resume_at

    def on_train_start(self, state: TrainState) -> None:
        self.log.truncate(self.resume_at)

    def on_log(self, state: TrainState, row: dict[str, Any]) -> None:
        self.log(step=state.position.step, **row)

    def on_evaluate(self, state: TrainState, metrics: dict[str, Any]) -> None:
        self.log(step=state.position.step, epoch=state.epoch, split="validation", **metrics)


class ProgressBar(Callback):
    """A tqdm bar over optimizer steps with the last logged loss; shown on the main process when asked for."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar: Any = None

    def on_train_start(self, state: TrainState) -> None:
        self.bar = tqdm(total=state.position.total, initial=state.position.step, disable=not self.enabled,
                        desc="train")

    def on_step_end(self, state: TrainState) -> None:
        self.bar.update(1)

    def on_log(self, state: TrainState, row: dict[str, Any]) -> None:
        self.bar.set_postfix(loss=f"{row['loss']:.4f}")

    def on_train_end(self, state: TrainState) -> None:
        self.bar.close()


class BestWeights(Callback):
    """Keep a CPU copy of the weights of the best evaluation by the task's main metric, and hand them back at the
    end. When the best is the last evaluation (of the last step) the live weights are the best: no copy is made."""

    def __init__(self, main_metric: str, greater_is_better: bool):
        self.metric, self.sign = main_metric, 1 if greater_is_better else -1

    def on_evaluate(self, state: TrainState, metrics: dict[str, Any]) -> None:
        pos, value = state.position, metrics[self.metric]
        state.improved = pos.best_metric is None or self.sign * value > self.sign * pos.best_metric
        if state.improved:
            pos.best_metric = value
            state.best_state = None if pos.step >= pos.total else {
                k: v.detach().to("cpu", copy=True) for k, v in state.model.state_dict().items()}
            state.result.best_step, state.result.best_validation = pos.step, metrics

    def on_train_end(self, state: TrainState) -> None:
        if state.signum:  # stopped to resume later: the checkpoint holds the live weights, nothing to restore
            return
        drop_gradients(state.model)  # also after an early stop
        if state.best_state is not None:
            state.model.load_state_dict(state.best_state)


class EarlyStopping(Callback):
    """End training after ``patience`` evaluations in a row without improvement (0: never). Runs after
    :class:`BestWeights`, whose ``state.improved`` it reads; the count is in the position, so it survives resume."""

    def __init__(self, patience: int):
        self.patience = patience

    def on_evaluate(self, state: TrainState, metrics: dict[str, Any]) -> None:
        pos = state.position
        pos.bad_evals = 0 if state.improved else pos.bad_evals + 1
        if self.patience and pos.bad_evals >= self.patience:
            pos.total = pos.step


class Checkpointer(Callback):
    """Write the resumable checkpoint (see nlpkit/train/checkpoint.py): everything the rest of the run depends
    on, every process's RNG states included, written by the main process; the loop asks for one every
    ``checkpoint_every`` steps, at the last step, and when a signal arrived (then it stops and the run resumes)."""

    def __init__(self, log: MetricsLog, keep: int):
        self.log, self.keep = log, keep

    def on_checkpoint(self, state: TrainState, folder: Path) -> None:
        pos, accelerator = state.position, state.accelerator
        pos.running = float(state.running)  # the sum so far goes into the checkpoint; resumed, it goes on
        saved = {"model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
                 "scheduler": state.scheduler.state_dict(), "best_state": state.best_state or {},
                 "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else {},
                 "metrics_position": self.log.position(),
                 "loop": json.dumps({"position": asdict(pos), "result": asdict(state.result)})}
        rngs = gather_object([ckpt.rng_state()]) if state.world > 1 else [ckpt.rng_state()]
        if state.main:
            ckpt.save(folder, pos.step, {**saved, "rng": rngs}, self.keep)


class PluginHooks(Callback):
    """Forward log lines, evaluations and checkpoints to the plugins' lifecycle hooks (nlpkit/hookspecs.py;
    ``hooks`` is given on the main process only), and end training when one called ``run.stop(reason)``.
    Present on every process: under DDP they all learn the main process's decision, to stop at the same step.
    Placed after the callbacks that write (a hook hears of a checkpoint once it is on disk) and after
    :class:`EarlyStopping` (a run that early stopping ended was not stopped by a plugin)."""

    def __init__(self, hooks: Any, run: RunContext | None):
        self.hooks, self.run = hooks, run

    def on_log(self, state: TrainState, row: dict[str, Any]) -> None:
        if self.hooks and state.main:
            self.hooks.on_log(run=self.run, step=state.position.step, metrics=row)

    def on_evaluate(self, state: TrainState, metrics: dict[str, Any]) -> None:
        pos = state.position
        if self.hooks and state.main:
            self.hooks.on_evaluate(run=self.run, step=pos.step, metrics=dict(metrics))
        reason = self._stop_reason(state.world)
        if reason and pos.step < pos.total:
            pos.total, state.result.stopped_early = pos.step, reason

    def on_checkpoint(self, state: TrainState, folder: Path) -> None:
        if self.hooks and state.main:
            self.hooks.on_checkpoint(run=self.run, step=state.position.step, folder=Path(folder))

    def _stop_reason(self, world: int) -> str | None:
        """Why a plugin asked to stop, the main process's word for every process: hooks run there only."""
        if self.run is None:
            return None
        if world == 1:
            return self.run.stop_reason
        return broadcast_object_list([self.run.stop_reason if self.run.is_main_process else None])[0]


def drop_gradients(model: torch.nn.Module) -> None:
    """Free every ``.grad`` (``zero_grad(set_to_none=True)`` keeps what an optimizer chooses to keep, such as
    FastAdamW's sparse table gradient)."""
    for p in model.parameters():
        p.grad = None
