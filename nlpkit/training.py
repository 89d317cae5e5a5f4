"""The one training loop every model and task goes through.

AdamW with warmup and linear decay, gradient clipping and accumulation, mixed precision where it is
fast, evaluation on validation every epoch (or N steps), the best checkpoint by the task's main metric,
early stopping, length-bucketed batches. Hugging Face ``accelerate`` handles device placement, autocast
and, under ``accelerate launch`` / ``torchrun``, DDP: each process trains on its shard of the batches and
evaluation gathers every process's predictions so the test set is scored exactly once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from nlpkit.batching import length_batches, shard
from nlpkit.contract import Model, Task
from nlpkit.errors import NlpkitError
from nlpkit.hardware import resolve_device, resolve_precision
from nlpkit.recipe import TrainOptions

MIXED = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


@dataclass
class TrainResult:
    steps: int = 0
    epochs: float = 0.0
    train_seconds: float = 0.0
    examples: int = 0
    tokens: int = 0
    best_step: int = 0
    best_validation: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"
    device: str = "cpu"
    world_size: int = 1


def make_accelerator(options: TrainOptions, model_cls: type[Model]) -> tuple[Accelerator, str]:
    device = resolve_device(options.device)
    precision = resolve_precision(options.precision, device, model_cls.prefers_fp32_on_cpu)
    accelerator = Accelerator(mixed_precision=MIXED[precision], cpu=device.type == "cpu")
    return accelerator, precision


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def predict(
    model: Model,
    features: list[dict],
    options: TrainOptions,
    accelerator: Accelerator | None = None,
) -> list[dict]:
    """Predictions for every example, in input order. Under DDP each process predicts its shard of the
    batches and the shards are gathered, so every example is predicted exactly once."""
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    device = accelerator.device if accelerator else next(model.parameters()).device
    batches = length_batches([f["length"] for f in features], options.eval_batch_size or 2 * options.batch_size,
                             options.max_tokens and 2 * options.max_tokens, shuffle=False)
    mine = batches[rank::world]
    out: list[tuple[int, dict]] = []
    was_training = model.training
    model.eval()
    autocast = accelerator.autocast() if accelerator else torch.autocast("cpu", enabled=False)
    with torch.inference_mode(), autocast:
        for idx in mine:
            batch = _to_device(model.collate([features[i] for i in idx]), device)
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
    log: Callable[..., None],
    accelerator: Accelerator,
    precision: str,
) -> TrainResult:
    """Train ``model`` in place; on return it holds the weights of the best validation evaluation."""
    set_seed(seed)
    rank, world = accelerator.process_index, accelerator.num_processes
    lengths = [f["length"] for f in train_features]
    per_epoch = len(shard(length_batches(lengths, options.batch_size, options.max_tokens, seed=seed), rank, world))
    if per_epoch == 0:
        raise NlpkitError("No training batches: the training split is empty (or smaller than the number of processes)")
    updates_per_epoch = max(1, per_epoch // options.grad_accum)
    total = options.max_steps or max(1, math.ceil(updates_per_epoch * options.epochs))
    eval_every = options.eval_every or updates_per_epoch

    optimizer = torch.optim.AdamW(model.param_groups(options.lr, options.weight_decay), lr=options.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(options.warmup * total), total)
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device
    raw = accelerator.unwrap_model(wrapped)

    result = TrainResult(precision=precision, device=str(device), world_size=world)
    best_metric, best_state, bad_evals = None, None, 0
    sign = 1 if task.greater_is_better else -1
    progress = tqdm(total=total, disable=not (options.progress and accelerator.is_main_process), desc="train")
    step, epoch, running, running_n = 0, 0, 0.0, 0
    wrapped.train()
    while step < total:
        batches = shard(length_batches(lengths, options.batch_size, options.max_tokens, seed=seed + epoch), rank, world)
        for b, idx in enumerate(batches):
            started = time.perf_counter()
            batch = _to_device(model.collate([train_features[i] for i in idx]), device)
            sync = (b + 1) % options.grad_accum == 0 or b + 1 == len(batches)
            with accelerator.no_sync(wrapped) if not sync else nullcontext(), accelerator.autocast():
                loss = wrapped(**batch).loss
            accelerator.backward(loss / options.grad_accum)
            result.examples += len(idx) * world
            result.tokens += sum(train_features[i].get("n_tokens", train_features[i]["length"]) for i in idx) * world
            running, running_n = running + loss.item(), running_n + 1
            if sync:
                if options.grad_clip:
                    accelerator.clip_grad_norm_(wrapped.parameters(), options.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                progress.update(1)
            result.train_seconds += time.perf_counter() - started
            if not sync:
                continue
            epoch_float = epoch + (b + 1) / len(batches)
            if step % options.log_every == 0 or step == total:
                log(step=step, epoch=round(epoch_float, 4), split="train", loss=running / running_n,
                    lr=scheduler.get_last_lr()[0],
                    examples_per_s=result.examples / max(result.train_seconds, 1e-9))
                progress.set_postfix(loss=f"{running / running_n:.4f}")
                running, running_n = 0.0, 0
            if step % eval_every == 0 or step == total:
                metrics = evaluate(raw, task, val_features, val_examples, options, accelerator)
                log(step=step, epoch=round(epoch_float, 4), split="validation", **metrics)
                value = metrics[task.main_metric]
                if best_metric is None or sign * value > sign * best_metric:
                    best_metric, bad_evals = value, 0
                    best_state = {k: v.detach().to("cpu", copy=True) for k, v in raw.state_dict().items()}
                    result.best_step, result.best_validation = step, metrics
                else:
                    bad_evals += 1
                if options.early_stopping and bad_evals >= options.early_stopping:
                    total = step  # stop: no improvement for `early_stopping` evaluations
            if step >= total:
                break
        epoch += 1
    progress.close()
    result.steps, result.epochs = step, round(step / updates_per_epoch, 4)
    if best_state is not None:
        raw.load_state_dict(best_state)
    return result


def evaluate(model: Model, task: Task, features: list[dict], examples: list[dict], options: TrainOptions,
             accelerator: Accelerator | None = None) -> dict[str, Any]:
    """The task's scalar metrics on a split (details such as confusion matrices are left out here)."""
    predictions = predict(model, features, options, accelerator)
    metrics = task.metrics(examples, predictions)
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
