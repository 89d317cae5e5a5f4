"""The ``train:`` schema of a recipe: the training options every model entry may override, each range checked
when the recipe is read (before any run folder exists)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from nlpkit.contract import Options


def _positive(default: float, description: str) -> Any:
    return Field(default, gt=0, allow_inf_nan=False, description=description)


class TrainOptions(Options):
    """The one shared training recipe; any model entry may override any of these. Every field's range is
    checked when the recipe is read, before any run folder exists."""

    epochs: float = _positive(3.0, "Passes over the training split (a fraction trains part of one); > 0.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides "
                                  "epochs); >= 1, or null for no limit.")
    min_steps: int | None = Field(None, ge=1, description="Train at least this many optimizer steps, more epochs "
                                  "than `epochs` where the data is small (early_stopping may still end it sooner); "
                                  ">= 1, or null. Unset, the model's own default where the recipe sets no length "
                                  "(epochs, max_steps): lstm and attention 1500 with early_stopping 3, bert 500.")
    batch_size: int = Field(32, ge=1, description="Training examples per batch (per process); >= 1.")
    max_tokens: int | None = Field(None, ge=1, description="Token budget per batch (padded tokens) instead of a "
                                   "fixed batch size; >= 1, or null to batch by batch_size.")
    eval_batch_size: int | None = Field(None, ge=1, description="Examples per batch when evaluating; >= 1, or null "
                                        "for 2 x batch_size.")
    lr: float = _positive(1e-3, "Peak learning rate of AdamW (reached after warmup, then decayed linearly); > 0. "
                          "Unset, the model's own default (bert 2e-5, 1e-4 for tagging, 3e-3 for its translation "
                          "decoder; lstm and attention 3e-3) else 0.001.")
    weight_decay: float = Field(0.01, ge=0, allow_inf_nan=False, description="AdamW weight decay; >= 0.")
    warmup: float = Field(0.06, ge=0, lt=1, allow_inf_nan=False, description="Fraction of the training steps spent "
                          "warming the learning rate up from 0; in [0, 1).")
    grad_clip: float | None = Field(1.0, gt=0, allow_inf_nan=False, description="Largest gradient norm (gradients "
                                    "are scaled down to it); > 0, or null for no clipping.")
    grad_accum: int = Field(1, ge=1, description="Batches whose gradients are summed per optimizer step; >= 1.")
    eval_every: int | None = Field(None, ge=1, description="Evaluate on the validation split every N optimizer "
                                   "steps; >= 1, or null for once per epoch.")
    log_every: int = Field(50, ge=1, description="Log the training loss every N optimizer steps; >= 1.")
    early_stopping: int | None = Field(None, ge=1, description="Stop after N evaluations without improvement; >= 1, "
                                       "or null to train the full budget.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Arithmetic precision: auto (bf16 or fp16 where the device runs it fast, else fp32), "
        "fp32, bf16 or fp16.")
    device: str = Field("auto", min_length=1, description="Where to train: auto (a GPU when there is one), cpu, "
                        "cuda, cuda:N or mps.")
    checkpoint_every: int | None = Field(None, ge=1, description="Optimizer steps between resumable checkpoints; "
                                         ">= 1, or null for none (a stop signal still writes one).")
    keep_checkpoints: int = Field(2, ge=1, description="How many of the newest checkpoints to keep; >= 1.")
    max_train_examples: int | None = Field(None, ge=1, description="Train on N examples: a sample drawn with the "
                                           "run's seed (see subset); >= 1, or null for all.")
    max_eval_examples: int | None = Field(None, ge=1, description="Validate on N examples (one fixed sample for "
                                          "every run); the test split is untouched; >= 1, or null for all.")
    max_test_examples: int | None = Field(None, ge=1, description="Test on N examples (one fixed sample for every "
                                          "run; results.json says so); >= 1, or null for all.")
    subset: Literal["random", "head"] = Field("random", description="How max_*_examples choose: random (seeded) "
                                              "or head (the first N in file order).")
    progress: bool = Field(True, description="Show a progress bar while training: true or false.")
    threads: int | None = Field(None, ge=1, description="CPU threads for this run (torch.set_num_threads); >= 1, or "
                                "null for torch's default (cores / --jobs under --jobs).")

    @field_validator("device")
    @classmethod
    def _device_is_here(cls, value: str) -> str:
        """A device that is not on this machine stops the recipe before anything is created (never a CPU run)."""
        from nlpkit.train.hardware import device_problem

        problem = device_problem(value)
        if problem:
            raise ValueError(problem)
        return value
