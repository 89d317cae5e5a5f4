"""The seq2seq decoder's weight gradients in one matmul (a CPU speed part of :class:`BahdanauDecoder`).

A step-by-step decoder multiplies each step's input by the same weights; autograd would compute each step's
weight gradient as its own small matmul. Here each step's matmul is a :class:`_StepMatmul` that keeps its input
and output gradient, and :class:`_WeightGrads` (an identity on the decoder's initial state, whose backward runs
after every step's) sums them as sum_t dy_t^T x_t in one matmul. Exact; faster on CPUs (``defer_weight_grads``).
"""

from __future__ import annotations

import torch


class _Steps:
    """The inputs and output gradients of one weight's per-step matmuls."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []
        self.grads: dict[int, torch.Tensor] = {}


class _StepMatmul(torch.autograd.Function):
    """x @ W^T whose backward gives only dx and keeps dy for ``_WeightGrads``."""

    @staticmethod
    def forward(ctx, x, weight, steps):
        ctx.steps, ctx.slot = steps, len(steps.inputs)
        steps.inputs.append(x.detach())
        ctx.save_for_backward(weight)
        return x @ weight.t()

    @staticmethod
    def backward(ctx, grad):
        ctx.steps.grads[ctx.slot] = grad
        (weight,) = ctx.saved_tensors
        return grad @ weight, None, None


class _WeightGrads(torch.autograd.Function):
    """Identity on the decoder's initial state. Every step depends on that state, so autograd runs this
    backward after all of theirs: then each weight's gradient is sum_t dy_t^T x_t, as one matmul."""

    @staticmethod
    def forward(ctx, state, steps_list, *weights):
        ctx.steps_list = steps_list
        ctx.shapes = [w.shape for w in weights]
        return state.clone()

    @staticmethod
    def backward(ctx, grad):
        out = []
        for steps, shape in zip(ctx.steps_list, ctx.shapes):
            if not steps.inputs:
                out.append(None)
                continue
            dy = [steps.grads.get(i, torch.zeros(x.shape[0], shape[0], dtype=x.dtype, device=x.device))
                  for i, x in enumerate(steps.inputs)]
            out.append(torch.cat(dy).t() @ torch.cat(steps.inputs))
        return (grad, None, *out)
