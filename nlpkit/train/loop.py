"""The one training loop every model and task goes through.

AdamW with warmup and linear decay, gradient clipping and accumulation, mixed precision where it is
fast, evaluation on validation every epoch (or N steps), the best weights by the task's main metric,
early stopping, length-bucketed batches, resumable checkpoints.

Distributed (``torchrun`` / ``accelerate launch``): Hugging Face ``accelerate`` wraps the model in DDP
(gloo on CPU, nccl on GPU). Every process builds the same global batches a 1-process run builds and
trains on its part of each (``batching.shard``), its loss weighted by its share of the batch's examples,
so DDP's gradient average is the gradient of the global batch's mean loss. ``batch_size`` is therefore
the global batch, and one recipe gives the same weights on 1 process or N, up to float rounding (with
dropout off: each process draws its own masks). For token-level losses (a mean over tokens, not
examples) the weighting is by examples, the usual DDP approximation. Evaluation gathers every process's
predictions, so each example is scored exactly once; only the main process logs.

Resume: batches are a pure function of (seed, epoch), and a checkpoint holds everything else the rest of
the run depends on (weights, optimizer, scheduler, gradient scaler, every process's RNG states, position
in the epoch, best-so-far, early-stopping count, metrics.jsonl offset), so a resumed run repeats the
uninterrupted one: same batches, same dropout masks, same final metrics.

``train`` is the schedule only; the metrics log, progress bar, best weights, early stopping, checkpoints and the
plugins' lifecycle hooks are callbacks on its named events (nlpkit/train/callbacks.py), so each reads on its own.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import broadcast_object_list, gather_object, set_seed
from transformers import get_linear_schedule_with_warmup

from nlpkit.contract import Model, RunContext, Task
from nlpkit.errors import NlpkitError
from nlpkit.files import disk_errors
from nlpkit.train import checkpoint as ckpt
from nlpkit.train.batching import length_batches, shard
from nlpkit.train.callbacks import (
    BestWeights,
    Callback,
    Checkpointer,
    EarlyStopping,
    MetricsLogger,
    PluginHooks,
    Position,
    ProgressBar,
    TrainResult,
    TrainState,
    drop_gradients,
)
from nlpkit.train.hardware import keep_freed_memory, reset_peak_memory, resolve_precision, speed_paths, use_device
from nlpkit.train.log import MetricsLog
from nlpkit.train.options import TrainOptions

MIXED = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def make_accelerator(options: TrainOptions, model_cls: type[Model]) -> tuple[Accelerator, str]:
    device = use_device(options.device)
    precision = resolve_precision(options.precision, device, model_cls.prefers_fp32_on_cpu)
    accelerator = Accelerator(mixed_precision=MIXED[precision], cpu=device.type == "cpu")
    reset_peak_memory(accelerator.device)  # the run's own CUDA peak, not the process's
    if speed_paths(accelerator.device).tf32 and precision != "fp32":  # fp32 asked for: full fp32 matmuls
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return accelerator, precision


def start_model(model_cls: type[Model], create: Callable[[], Model], checkpoints: Path, device: str) -> Model:
    """The model a run starts from: built by ``create`` once, saved beside the checkpoints, and loaded from
    there by the other DDP processes and by a resumed run. Building is not always repeatable (a subword
    vocabulary's ties can fall by hash order), yet every process must share one vocabulary, and resumed
    weights must meet the vocabulary they were trained with."""
    saved = Path(checkpoints) / "model"
    state = PartialState(cpu=use_device(device).type == "cpu")  # the device first: create() follows its speed rule
    # The main process looks (after clearing what --restart clears) and tells the others: were they to look
    # for themselves, one could see the copy the main process is about to write and skip the barrier below.
    model = ckpt.load_initial(model_cls, saved) if state.is_main_process and saved.is_dir() else None
    if broadcast_object_list([model is not None if state.is_main_process else None])[0]:
        return model if model is not None else model_cls.load(saved)
    if state.is_main_process:
        model = create()
        partial = saved.with_name(".model.tmp")
        shutil.rmtree(partial, ignore_errors=True)
        with disk_errors(partial):
            model.save(partial)
            partial.rename(saved)  # complete or absent
    state.wait_for_everyone()
    return model if model is not None else model_cls.load(saved)


def _to_device(batch: dict[str, Any], device: torch.device, host: tuple[str, ...] = ()) -> dict[str, Any]:
    """Tensors to ``device``; on a GPU through pinned memory, so the copy overlaps with compute. Entries named in
    ``host`` (a model's ``host_inputs``, e.g. lengths for ``pack_padded_sequence``) stay on the CPU: copying them
    back there inside the step would make the CPU wait for the GPU."""
    pin = speed_paths(device).pin_memory
    return {k: (v.pin_memory() if pin else v).to(device, non_blocking=True)
            if torch.is_tensor(v) and k not in host else v for k, v in batch.items()}


def predict(
    model: Model,
    features: list[dict],
    options: TrainOptions,
    accelerator: Accelerator | None = None,
    *,
    final: bool,
) -> list[dict]:
    """Predictions for every example, in input order. Under DDP each process predicts its share of the
    batches and the shares are gathered, so every example is predicted exactly once.

    ``final``: True for the test split (the model uses its test-time settings, e.g. the recipe's beam search),
    False for validation during training; told to the model through ``Model.prepare_inference`` every time,
    so what a prediction means never depends on what happened to the model before (such as loading weights)."""
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    device = accelerator.device if accelerator else next(model.parameters()).device
    host = getattr(model, "host_inputs", ())  # batch entries that stay on the CPU
    batches = length_batches([f["length"] for f in features], options.eval_batch_size or 2 * options.batch_size,
                             options.max_tokens and 2 * options.max_tokens, shuffle=False)
    out: list[tuple[int, dict]] = []
    was_training = model.training
    model.eval()
    model.prepare_inference(final)
    autocast = accelerator.autocast() if accelerator else torch.autocast("cpu", enabled=False)
    with torch.inference_mode(), autocast:
        for idx in batches[rank::world]:
            batch = _to_device(model.collate([features[i] for i in idx]), device, host)
            out.extend(zip(idx, model.predict(batch)))
    model.train(was_training)
    if world > 1:
        out = gather_object(out)
    by_index = dict(out)
    return [by_index[i] for i in range(len(features))]


def train(
    model: Model,
    task: Task,
    train_features: list[dict],
    val_features: list[dict],
    val_examples: list[dict],
    options: TrainOptions,
    seed: int,
    log: MetricsLog,
    accelerator: Accelerator,
    precision: str,
    checkpoints: Path | None = None,
    *,
    run: RunContext | None = None,
    hooks: Any = None,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train ``model`` in place; on return it holds the weights of the best validation evaluation.

    With ``checkpoints`` (a folder), resume from its newest intact checkpoint if there is one, write one
    every ``checkpoint_every`` steps, and on SIGTERM/SIGINT write one and raise :class:`ckpt.Interrupted`.

    ``hooks`` (the plugin manager's ``pm.hook``, given on the main process only) are told of every log line
    (``on_log``), evaluation (``on_evaluate``) and checkpoint (``on_checkpoint``) with ``run``; when a hook
    calls ``run.stop(reason)``, training ends after the current evaluation (every process agrees).

    This function is the schedule only (steps, accumulation, when to log, evaluate and checkpoint); what happens
    then is done by callbacks (nlpkit/train/callbacks.py). ``callbacks`` are told of every event after the
    built-in ones (a tracker, a profiler, a test counting events)."""
    paths = speed_paths(accelerator.device, accelerator.num_processes)
    if paths.keep_freed_memory:
        keep_freed_memory()
    set_seed(seed, device_specific=True)  # seed + rank: processes draw different dropout masks
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    lengths = [f["length"] for f in train_features]

    def epoch_batches(epoch: int) -> list[list[int]]:
        return length_batches(lengths, options.batch_size, options.max_tokens, seed=seed + epoch)

    per_epoch = len(epoch_batches(0))
    if per_epoch == 0:
        raise NlpkitError("No training batches: the training split is empty")
    updates_per_epoch = math.ceil(per_epoch / options.grad_accum)
    total = options.max_steps or max(1, math.ceil(updates_per_epoch * options.epochs), options.min_steps or 0)
    eval_every, every = options.eval_every or updates_per_epoch, options.checkpoint_every
    state, wrapped, resume_at = _start(model, options, accelerator, paths, precision, total, checkpoints)
    pos, result = state.position, state.result
    # The order matters: a hook hears of a checkpoint once it is written; early stopping reads BestWeights' verdict.
    everyone = [MetricsLogger(log, resume_at), ProgressBar(options.progress and state.main),
                BestWeights(task.main_metric, task.greater_is_better), EarlyStopping(options.early_stopping),
                *([Checkpointer(log, options.keep_checkpoints)] if checkpoints else []),
                PluginHooks(hooks, run), *callbacks]

    def fire(event: str, *args: Any) -> None:
        for cb in everyone:
            getattr(cb, event)(state, *args)

    host = getattr(model, "host_inputs", ())  # batch entries that stay on the CPU

    def batch_for(idx: list[int]) -> dict[str, Any]:
        mine = shard(idx, rank, world)
        return _to_device(model.collate([train_features[i] for i in mine or idx[:1]]), device, host)

    wrapped.train()
    with ckpt.StopRequest() as stop:
        fire("on_train_start")
        while pos.step < pos.total:
            batches = epoch_batches(pos.epoch)
            ahead: tuple[int, dict[str, Any]] | None = None  # the next batch, prepared while the GPU works
            for b in range(pos.next_batch, len(batches)):
                started, idx = time.perf_counter(), batches[b]
                share = len(shard(idx, rank, world)) / len(idx)  # an empty part runs one example at weight 0
                batch = ahead[1] if ahead is not None and ahead[0] == b else batch_for(idx)
                sync = (b + 1) % options.grad_accum == 0 or b + 1 == len(batches)
                _forward_backward(state, wrapped, batch, share, options.grad_accum, sync)
                # the GPU is still running this step's kernels: collate and copy the next batch meanwhile
                ahead = (b + 1, batch_for(batches[b + 1])) if paths.prefetch and b + 1 < len(batches) else None
                result.examples += len(idx)
                result.tokens += sum(train_features[i].get("n_tokens", train_features[i]["length"]) for i in idx)
                pos.next_batch = b + 1
                if sync:
                    _optimizer_step(state, wrapped, options.grad_clip)
                result.train_seconds += time.perf_counter() - started
                if not sync:
                    continue
                state.epoch = round(pos.epoch + (b + 1) / len(batches), 4)
                fire("on_step_end")
                if pos.step % options.log_every == 0 or pos.step == pos.total:
                    fire("on_log", _take_train_row(state))
                if pos.step % eval_every == 0 or pos.step == pos.total:
                    fire("on_evaluate", evaluate(state.model, task, val_features, val_examples, options, accelerator))
                state.signum = stop.agreed(world, device)
                if checkpoints and (state.signum or (every and (pos.step % every == 0 or pos.step >= pos.total))):
                    fire("on_checkpoint", Path(checkpoints))
                if state.signum:
                    fire("on_train_end")
                    where = f"checkpoint at step {pos.step} in {checkpoints}" if checkpoints else "no checkpoint"
                    raise ckpt.Interrupted(f"Stopped by signal {state.signum}: {where}; run the same command again "
                                           "to resume", state.signum)
                if pos.step >= pos.total:
                    break
            else:
                pos.epoch, pos.next_batch = pos.epoch + 1, 0
    result.steps, result.epochs = pos.step, round(pos.step / updates_per_epoch, 4)
    fire("on_train_end")
    return result


def _start(model: Model, options: TrainOptions, accelerator: Accelerator, paths: Any, precision: str, total: int,
           checkpoints: Path | None) -> tuple[TrainState, torch.nn.Module, int]:
    """The state training starts from: optimizer and schedule made, model and optimizer prepared (DDP), and, when
    ``checkpoints`` holds one, everything restored from the newest checkpoint. Also the DDP-wrapped model (what
    the steps call) and the metrics.jsonl offset to resume at."""
    # A model may bring its own optimizer (Model.make_optimizer, e.g. bert's sparse-row FastAdamW); default AdamW.
    # On CUDA torch's fused AdamW (one kernel per step; speed_paths).
    optimizer = (model.make_optimizer(options.lr, options.weight_decay)
                 or torch.optim.AdamW(model.param_groups(options.lr, options.weight_decay), lr=options.lr,
                                      fused=paths.fused_adamw or None))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(options.warmup * total), total)
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    device, world = accelerator.device, accelerator.num_processes
    raw = accelerator.unwrap_model(wrapped)
    per_step = options.grad_accum * (options.max_tokens or options.batch_size)
    pos = Position(total=total)
    result = TrainResult(precision=precision, device=str(device), world_size=world,
                         effective_batch_size=f"{per_step} tokens" if options.max_tokens else per_step)
    best_state = None
    saved = _load_checkpoint(checkpoints, accelerator.is_main_process, world) if checkpoints else None
    if saved:
        raw.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if accelerator.scaler is not None and saved["scaler"]:
            accelerator.scaler.load_state_dict(saved["scaler"])
        loop = json.loads(saved["loop"])
        pos, result = Position(**loop["position"]), TrainResult(**loop["result"])
        best_state = saved["best_state"] or None
        ckpt.set_rng_state(saved["rng"][accelerator.process_index if len(saved["rng"]) == world else 0])
        result.resumed_from, result.world_size, result.device = pos.step, world, str(device)
    # The running loss is summed on the device (float64, as Python floats were) and read only at log steps:
    # loss.item() every step would make the CPU wait for the GPU's step to finish before queuing the next.
    running = torch.tensor(pos.running, dtype=torch.float32 if device.type == "mps" else torch.float64,
                           device=device)
    state = TrainState(pos, result, raw, optimizer, scheduler, accelerator, running, best_state)
    return state, wrapped, saved["metrics_position"] if saved else 0


def _forward_backward(state: TrainState, wrapped: torch.nn.Module, batch: dict[str, Any], share: float,
                      grad_accum: int, sync: bool) -> None:
    """One micro-batch: this process's loss weighted by its ``share`` of the global batch (so DDP's average is the
    global batch's mean loss gradient), gradients accumulated without an all-reduce until ``sync``."""
    accelerator = state.accelerator
    with accelerator.no_sync(wrapped) if not sync else nullcontext(), accelerator.autocast():
        loss = wrapped(**batch).loss
    accelerator.backward(loss * (share * state.world / grad_accum))
    state.running += loss.detach().to(state.running.dtype) * share
    state.position.running_n += 1


def _optimizer_step(state: TrainState, wrapped: torch.nn.Module, grad_clip: float) -> None:
    """Clip, step the optimizer and (unless fp16 skipped the step for inf gradients) the schedule; count the step."""
    accelerator, optimizer = state.accelerator, state.optimizer
    if grad_clip:
        _clip_gradients(accelerator, wrapped, optimizer, grad_clip)
    optimizer.step()
    if not accelerator.optimizer_step_was_skipped:
        state.scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    state.position.step += 1
    if state.position.step >= state.position.total:  # the last update: the final evaluation needs no gradient memory
        drop_gradients(state.model)


def _take_train_row(state: TrainState) -> dict[str, Any]:
    """The train log row, the mean loss since the last one over all processes (the one host sync of a log step);
    the running sum starts again."""
    pos, result = state.position, state.result
    mean_loss = _sum_over_processes(float(state.running), state.world, state.accelerator.device) / pos.running_n
    row = {"epoch": state.epoch, "split": "train", "loss": mean_loss, "lr": state.scheduler.get_last_lr()[0],
           "examples_per_s": result.examples / max(result.train_seconds, 1e-9)}
    pos.running, pos.running_n = 0.0, 0
    state.running.zero_()
    return row


def _clip_gradients(accelerator: Accelerator, model: torch.nn.Module, optimizer: Any, max_norm: float) -> None:
    """Clip the global gradient norm; an optimizer that knows where its gradients are zero (bert's FastAdamW)
    does it itself, with the same result."""
    own = getattr(getattr(optimizer, "optimizer", optimizer), "clip_grad_norm_", None)
    if own is None:
        accelerator.clip_grad_norm_(model.parameters(), max_norm)
    else:
        accelerator.unscale_gradients()
        own(max_norm)


def _sum_over_processes(value: float, world: int, device: torch.device) -> float:
    if world == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(total)
    return float(total.item())


def _load_checkpoint(folder: Path, main: bool, world: int) -> dict[str, Any] | None:
    """The newest intact checkpoint; under DDP the main process picks it and every process reads that one
    (the run folder must be on a file system all machines share)."""
    found = ckpt.latest(folder) if main else None
    if world == 1:
        return found[1] if found else None
    name = broadcast_object_list([found[0].name if found else None])[0]
    if name is None:
        return None
    return found[1] if main else ckpt.read(Path(folder) / name)


def evaluate(model: Model, task: Task, features: list[dict], examples: list[dict], options: TrainOptions,
             accelerator: Accelerator | None = None, final: bool = False) -> dict[str, Any]:
    """The task's scalar metrics on a split (details such as confusion matrices are left out here); by default
    as validation during training (``final=False``: the model's cheap evaluation settings)."""
    predictions = predict(model, features, options, accelerator, final=final)
    metrics = task.metrics(examples, predictions)
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
