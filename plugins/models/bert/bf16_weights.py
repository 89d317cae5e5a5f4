"""bf16 working copies of the fast encoder's matrices, for CPUs with native bf16 (issue #21).

Under bf16 autocast every ``F.linear`` casts its fp32 weight to bf16 in the forward (a new tensor each step)
and its bf16 weight gradient back to fp32 in the backward (another). At batch 8 on a 2-core CPU with AMX these
casts were 13 % of a step, more than the matmuls they feed cost in some layers (``benchmarks/BERT_CPU_NOTES.md``).

:class:`Bf16Weights` keeps one bf16 copy of each weight and bias in one buffer, refreshed by one ``_foreach_copy_``
when the fp32 weights may have changed: after any optimizer's step (a global step hook counts them: fused
optimizer kernels do not bump version counters) or an in-place write (a checkpoint or best-weights load bumps
the weights' version counters). The fp32 parameters stay the model's weights (state dict, optimizer, saved
files): they are the master weights; each copy's bf16 gradient is added to its master's ``.grad`` as soon as
autograd has it (a post-accumulate hook), so any optimizer, gradient accumulation and clipping see fp32
gradients where they always were.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook


class Bf16Weights:
    """bf16 copies of ``linears``' weights and biases, kept equal to them (rounded) and routing gradients back."""

    def __init__(self, linears: list[nn.Linear]):
        self.masters = [p for m in linears for p in (m.weight, m.bias)]
        buffer = torch.empty(sum(p.numel() for p in self.masters), dtype=torch.bfloat16,
                             device=self.masters[0].device)
        self.copies, at = [], 0
        for master in self.masters:
            copy = buffer[at:at + master.numel()].view(master.shape).requires_grad_(master.requires_grad)
            if master.requires_grad:
                copy.register_post_accumulate_grad_hook(_add_to(master))
            self.copies.append(copy)
            at += master.numel()
        self.of = {id(m): (self.copies[2 * i], self.copies[2 * i + 1]) for i, m in enumerate(linears)}
        self.seen: tuple[int, list[int]] | None = None  # (optimizer steps, weight versions) at the last refresh

    @torch.no_grad()
    def current(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """``id(linear)`` -> its bf16 (weight, bias), refreshed first if a master may have changed."""
        now = (_optimizer_steps[0], [p._version for p in self.masters])
        if now != self.seen:
            torch._foreach_copy_(self.copies, self.masters)
            self.seen = now
        return self.of


_optimizer_steps = [0]


def _count_step(*_: object) -> None:
    _optimizer_steps[0] += 1


register_optimizer_step_post_hook(_count_step)


def _add_to(master: nn.Parameter):
    """The hook moving a copy's gradient to ``master.grad`` (added to it under gradient accumulation). A new
    tensor each step: a buffer kept between steps measured 5 % slower (cold in the cache, where a just-freed
    block is warm)."""

    def hook(copy: torch.Tensor) -> None:
        grad, copy.grad = copy.grad, None
        if master.grad is None:
            master.grad = grad.to(master.dtype)
        else:
            master.grad.add_(grad)

    return hook


def bf16_autocast_on(device_type: str) -> bool:
    """Whether matmuls here run under CPU bf16 autocast (where :class:`Bf16Weights` replaces its casts)."""
    return (device_type == "cpu" and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16)
