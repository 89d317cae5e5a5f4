"""The model checks of the conformance kit: each a plain function that raises AssertionError saying what
is wrong (usable outside pytest); :class:`nlpkit.testing.ModelKit` runs them per task kind."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed

from nlpkit.contract import Model, Output, TaskSpec, Unsupported
from nlpkit.errors import NlpkitError
from nlpkit.testing.tiny import long_example, tiny_examples

# ----------------------------------------------------------------------------------- model checks


def _fail(message: str) -> None:
    raise AssertionError(message)


def _name(model_cls: type) -> str:
    return getattr(model_cls, "name", model_cls.__name__)


def build(model_cls: type[Model], kind: str, options: dict, seed: int = 0, n: int = 24) -> tuple[Model, list[dict]]:
    """Seed as the engine does, then create the model on ``n`` tiny training examples; returns both."""
    spec, examples = tiny_examples(kind, n)
    set_seed(seed)
    model = model_cls.create(spec, model_cls.Options(**options), examples)
    return model, examples


def make_batch(model: Model, examples: list[dict]) -> dict[str, Any]:
    return model.collate([model.encode(ex) for ex in examples])


def batch_loss(model: Model, batch: dict[str, Any]) -> torch.Tensor:
    out = model(**batch)
    if not isinstance(out, Output):
        _fail(f"forward() returned {type(out).__name__}; it must return nlpkit.Output(loss=...)")
    if out.loss is None or not torch.is_tensor(out.loss) or out.loss.dim() != 0:
        _fail(f"forward() on a batch with gold labels must give a scalar loss tensor, got {out.loss!r}")
    if not torch.isfinite(out.loss.detach()).item():
        _fail(f"forward() gave a non-finite loss: {out.loss.item()}")
    return out.loss


def train_steps(model: Model, batch: dict[str, Any], steps: int, lr: float) -> list[float]:
    """``steps`` AdamW updates on one batch, as the engine's loop makes them (param_groups, clipping)."""
    model.train()
    optimizer = torch.optim.AdamW(model.param_groups(lr, 0.0), lr=lr)
    losses = []
    for _ in range(steps):
        loss = batch_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    return losses


def eval_loss(model: Model, batch: dict[str, Any]) -> float:
    model.eval()
    with torch.no_grad():
        return batch_loss(model, batch).item()


def predictions(model: Model, examples: list[dict]) -> list[Any]:
    """The ``prediction`` of each example, checked against the shape of the model's task kind."""
    model.eval()
    with torch.inference_mode():
        out = model.predict(make_batch(model, examples))
    if not isinstance(out, list) or len(out) != len(examples):
        _fail(f"predict() must return one dict per example: {len(examples)} examples, got {out!r:.200}")
    preds = []
    for ex, row in zip(examples, out):
        if not isinstance(row, dict) or "prediction" not in row:
            _fail(f"predict() must return dicts with a 'prediction' key, got {row!r:.200}")
        check_prediction_shape(model.spec, ex, row["prediction"])
        preds.append(row["prediction"])
    return preds


def check_prediction_shape(spec: TaskSpec, example: dict, prediction: Any) -> None:
    kind, n = spec.kind, len(spec.labels)
    if kind == "classification" and not (isinstance(prediction, int) and 0 <= prediction < n):
        _fail(f"a classification prediction is a label id in 0..{n - 1} (an int), got {prediction!r}")
    if kind == "tagging":
        ok = isinstance(prediction, list) and all(isinstance(t, int) and 0 <= t < n for t in prediction)
        if not ok or len(prediction) != len(example["tokens"]):
            _fail(f"a tagging prediction is a list of tag ids, one per input token: {len(example['tokens'])} "
                  f"tokens, got {prediction!r:.200} (a model that truncates must still tag every token)")
    if kind == "seq2seq" and not isinstance(prediction, str):
        _fail(f"a seq2seq prediction is a string, got {prediction!r:.200}")


def check_builds(model: Model, examples: list[dict], kind: str) -> None:
    """``create`` gave a Model with trainable parameters; ``encode`` gives features with a positive ``length``."""
    if not isinstance(model, Model):
        _fail(f"create() returned {type(model).__name__}, not an nlpkit.Model")
    if model.spec.kind != kind:
        _fail(f"the model built for kind '{kind}' has spec.kind '{model.spec.kind}'")
    if sum(p.numel() for p in model.parameters() if p.requires_grad) == 0:
        _fail("the model has no trainable parameters")
    for ex in examples[:4]:
        features = model.encode(ex)
        if not isinstance(features.get("length"), int) or features["length"] < 1:
            _fail(f"encode() must set 'length' to a positive int (tokens, for batching); got {features!r:.200}")


def check_forward_backward(model: Model, examples: list[dict]) -> None:
    """A forward pass gives a finite scalar loss; backward gives finite gradients to trainable parameters."""
    model.train()
    model.zero_grad(set_to_none=True)
    batch_loss(model, make_batch(model, examples[:6])).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    if all(g is None for g in grads.values()):
        _fail("backward() reached no parameter: is the loss detached from the model?")
    bad = [n for n, g in grads.items() if g is not None and not torch.isfinite(g).all()]
    if bad:
        _fail(f"non-finite gradients in {', '.join(bad[:5])}")
    model.zero_grad(set_to_none=True)


def overfit(model: Model, examples: list[dict], steps: int, lr: float) -> tuple[float, float]:
    """Train on one batch of 8 for ``steps`` steps; its loss (dropout off) before and after."""
    batch = make_batch(model, examples[:8])
    start = eval_loss(model, batch)
    train_steps(model, batch, steps, lr)
    return start, eval_loss(model, batch)


def judge_overfit(start: float, end: float, steps: int, lr: float, ratio: float = 0.3) -> None:
    if not end < ratio * start:
        _fail(f"the loss does not fall when overfitting one batch of 8: {start:.4f} at the start, {end:.4f} after "
              f"{steps} steps at lr={lr} (needed < {ratio} x start). Is the loss connected to the parameters that "
              f"train, and are the labels read from the batch?")


def check_overfits(model_cls: type[Model], kind: str, options: dict, steps: int = 30, lr: float = 3e-3,
                   ratio: float = 0.3) -> None:
    """A few dozen steps on one batch drive its loss well below where it started."""
    model, examples = build(model_cls, kind, options)
    judge_overfit(*overfit(model, examples, steps, lr), steps, lr, ratio)


def _state_diff(a: Model, b: Model) -> list[str]:
    sa, sb = a.state_dict(), b.state_dict()
    missing = sorted(set(sa) ^ set(sb))
    differ = [k for k in sa if k in sb and (sa[k].shape != sb[k].shape or not torch.equal(sa[k], sb[k]))]
    return missing + differ


def check_save_load(model: Model, examples: list[dict], model_cls: type[Model], folder: Path) -> None:
    """A (trained) model saved and loaded again has the same weights, loss and predictions, both predicting with
    their test-time settings (``prepare_inference(True)``, as the engine does for the test split and ``nlpkit
    predict`` after loading)."""
    model.prepare_inference(True)
    batch = make_batch(model, examples[:8])
    before_loss, before = eval_loss(model, batch), predictions(model, examples)
    model.save(folder)
    torch.manual_seed(987654)  # a different RNG state: loading must not depend on it
    loaded = model_cls.load(folder)
    if not isinstance(loaded, Model):
        _fail(f"{_name(model_cls)}.load() returned {type(loaded).__name__}, not an nlpkit.Model")
    loaded.prepare_inference(True)
    after_loss, after = eval_loss(loaded, make_batch(loaded, examples[:8])), predictions(loaded, examples)
    changed = _state_diff(model, loaded)
    if changed or not math.isclose(before_loss, after_loss, rel_tol=1e-5, abs_tol=1e-6) or before != after:
        wrong = [i for i, (x, y) in enumerate(zip(before, after)) if x != y]
        _fail(f"save() then load() changed the model: loss on the same batch {before_loss:.6f} before, "
              f"{after_loss:.6f} after; {len(wrong)} of {len(before)} predictions differ"
              + (f" (first: {before[wrong[0]]!r:.80} -> {after[wrong[0]]!r:.80})" if wrong else "")
              + (f"; weights missing or different after loading: {', '.join(changed[:8])}" if changed else "")
              + ". save() must write every trained weight (and the vocabulary) and load() must read them back.")


def check_seeded(model_cls: type[Model], kind: str, options: dict, lr: float = 3e-3,
                 seeds_differ: bool = True) -> None:
    """The same seed gives the same model and the same training; another seed another initialisation."""

    def run(seed: int) -> tuple[Model, list[float], list]:
        model, examples = build(model_cls, kind, options, seed=seed)
        set_seed(seed)
        losses = train_steps(model, make_batch(model, examples[:8]), 3, lr)
        return model, losses, predictions(model, examples)

    (a, losses_a, preds_a), (b, losses_b, preds_b) = run(1), run(1)
    if losses_a != losses_b or preds_a != preds_b or _state_diff(a, b):
        _fail(f"the same seed gave different results: training losses {losses_a} vs {losses_b}. The engine seeds "
              f"python's random, numpy and torch before create(); a model must take its randomness from them, "
              f"not from its own generator, the clock or os.urandom (and fit its vocabulary deterministically).")
    if seeds_differ and not _state_diff(build(model_cls, kind, options, seed=2)[0],
                                        build(model_cls, kind, options, seed=1)[0]):
        _fail("seeds 1 and 2 gave identical initial weights: the model ignores the seed (does it seed torch "
              "itself?), so repeating a run over seeds would measure nothing. Set seeds_differ = False if the "
              "model has no random initialisation by design.")


def check_batch_of_one_and_longest_input(model: Model, examples: list[dict], kind: str) -> None:
    """A batch of one example works, and so does an input longer than the model allows (it must cope: truncate,
    or window, or take any length)."""
    limit = getattr(model.options, "max_length", None)
    long = long_example(kind, 3 * limit if isinstance(limit, int) and limit > 0 else 600)
    for name, batch_examples in (("a batch of one example", examples[:1]), ("the longest allowed input", [long]),
                                 ("a padded batch of a short and a long input", [examples[0], long])):
        try:
            model.train()
            batch_loss(model, make_batch(model, batch_examples)).backward()
            predictions(model, batch_examples)
        except AssertionError as err:
            _fail(f"{name}: {err}")
        except Exception as err:
            _fail(f"{name} failed: {type(err).__name__}: {err}")
    model.zero_grad(set_to_none=True)


def check_padding_invariant(model: Model, examples: list[dict], kind: str) -> None:
    """An example's prediction does not change when it shares a batch with a longer one (padding is masked)."""
    alone = [predictions(model, [ex])[0] for ex in examples[:6]]
    together = predictions(model, examples[:6] + [long_example(kind, 20)])[:6]
    if alone != together:
        wrong = [i for i, (x, y) in enumerate(zip(alone, together)) if x != y]
        _fail(f"padding changed the predictions of examples {wrong}: alone {[alone[i] for i in wrong]!r:.200}, "
              f"in a padded batch {[together[i] for i in wrong]!r:.200}. Mask padded positions.")


def _forward_logits(model: Model, examples: list[dict]) -> torch.Tensor | None:
    with torch.no_grad():
        out = model(**make_batch(model, examples))
    return None if out.logits is None else out.logits.detach().float()


def check_padding_logits(model: Model, examples: list[dict], kind: str, atol: float = 1e-4,
                         rtol: float = 1e-3) -> None:
    """An example's logits at its real positions do not change (beyond float noise) when its batch is padded to a
    longer input: a stricter check than predictions, whose argmax can hide a leak (a random padding embedding
    that enters a mean moves every logit, yet may flip no label). Padding is assumed to follow the real
    positions (the last dimensions of the logits are cut to the lone example's size). Skipped when ``forward``
    returns no logits."""
    was_training = model.training
    model.eval()
    try:
        long = long_example(kind, 20)
        for i, example in enumerate(examples[:4]):
            alone, together = _forward_logits(model, [example]), _forward_logits(model, [example, long])
            if alone is None or together is None:
                return
            if alone.dim() != together.dim() or any(a > b for a, b in zip(alone.shape[1:], together.shape[1:])):
                _fail(f"logits of a lone example {tuple(alone.shape)} do not fit inside those of a padded batch "
                      f"{tuple(together.shape)}: pad after the real positions")
            real = together[0][tuple(slice(0, n) for n in alone.shape[1:])]
            diff = (real - alone[0]).abs().max().item()
            allowed = atol + rtol * alone.abs().max().item()
            if not diff <= allowed:
                _fail(f"padding changed the logits at real positions by up to {diff:.3g} (allowed {allowed:.2g}): "
                      f"example {i} alone vs in a batch padded to a 20-word input. Mask padded positions "
                      "(padding_idx, masked means and attention, packed sequences).")
    finally:
        model.train(was_training)


def check_bf16(model: Model, examples: list[dict], device: str = "cpu") -> None:
    """Forward, backward and predict run under bf16 autocast (what the engine uses where bf16 is fast)."""
    model.to(device)
    try:
        with torch.autocast(device, dtype=torch.bfloat16):
            model.train()
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in make_batch(model, examples[:4]).items()}
            batch_loss(model, batch).backward()
            model.eval()
            with torch.inference_mode():
                model.predict(batch)
    except AssertionError as err:
        _fail(f"under bf16 autocast: {err}")
    except Exception as err:
        _fail(f"under bf16 autocast: {type(err).__name__}: {err} (compute the loss in float32, e.g. "
              f"F.cross_entropy(logits.float(), labels), and cast masks to the activations' dtype)")
    finally:
        model.zero_grad(set_to_none=True)
        model.to("cpu")


def check_refuses(model_cls: type[Model], kind: str, options: dict) -> None:
    """Asked for a task kind it does not serve, ``create`` raises ``nlpkit.Unsupported`` saying why."""
    spec, examples = tiny_examples(kind)
    try:
        model_cls.create(spec, model_cls.Options(**options), examples)
    except (Unsupported, NlpkitError) as err:
        if len(str(err).strip()) < 10:
            _fail(f"create() for unserved kind '{kind}' raised {type(err).__name__} without a reason: {str(err)!r}")
        return
    except Exception as err:
        _fail(f"create() for unserved kind '{kind}' crashed with {type(err).__name__}: {err}; raise "
              f"nlpkit.Unsupported with a reason instead (e.g. from why_not)")
    _fail(f"create() built a model for kind '{kind}', which '{_name(model_cls)}' does not serve "
          f"(serves: {', '.join(model_cls.serves)}); raise nlpkit.Unsupported with a reason")


