"""The word embedding and the optimizer of the fast BERT path (``fast_encoder.py``), one CPU process only.

The word embedding keeps the rows touched so far as a prefix of its table
(rows permuted into slots on first touch) and index-adds their gradient into a persistent ``.grad``, so
no step makes, zero-fills or updates a dense 47 MB gradient. :class:`FastAdamW` updates only that prefix
(exact with weight decay 0: an untouched row has zero gradient and zero moments, which AdamW leaves
unchanged). The table is a real Parameter with a real ``.grad`` (its rows past the prefix are zero);
:meth:`FastAdamW.clip_grad_norm_`, which the training loop prefers to the generic one, skips those rows.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------- sparse word embedding


class _GatherRows(torch.autograd.Function):
    """out = table[slots]; backward index-adds into ``table.grad`` (made once, then kept) instead of
    returning a dense gradient."""

    @staticmethod
    def forward(ctx: Any, slots: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(slots)
        ctx.table = table
        return F.embedding(slots, table)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None]:
        (slots,) = ctx.saved_tensors
        table = ctx.table
        if table.grad is None:  # first step, or an optimizer that sets grads to None (then it is a dense cost)
            table.grad = torch.zeros_like(table)
        table.grad.index_add_(0, slots.reshape(-1), grad.reshape(-1, grad.shape[-1]).to(table.dtype))
        return None, None


class SparseRowEmbedding(nn.Module):
    """A word embedding whose rows touched so far are the prefix ``table[:n_active]``.

    ``table`` holds every row, permuted: ``table[slot_of_row[r]]`` is row r. The first time a row is seen it
    swaps places with the first untouched slot. State (table, permutation, n_active) is in ``state_dict``,
    so checkpoints and best-weights copies restore it exactly. :meth:`row_weight` gives the table in row
    order."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        rows = weight.shape[0]
        self.table = nn.Parameter(weight.detach().clone())
        self.register_buffer("slot_of_row", torch.arange(rows))
        self.register_buffer("row_of_slot", torch.arange(rows))
        self.register_buffer("active", torch.zeros((), dtype=torch.long))
        self.dirty: list[torch.Tensor] = []  # slots given gradient since the last zero_grad_rows()

    @property
    def n_active(self) -> int:
        return int(self.active)

    @torch.no_grad()
    def _activate(self, ids: torch.Tensor) -> None:
        """Move rows of ``ids`` not yet active into the slots right after the prefix."""
        n = self.n_active
        slots = self.slot_of_row[ids.unique()]
        new = slots[slots >= n]
        if not len(new):
            return
        targets = torch.arange(n, n + len(new), device=new.device)
        a = new[~torch.isin(new, targets)]  # new rows outside the target range ...
        b = targets[~torch.isin(targets, new)]  # ... swap with untouched rows inside it
        if len(a):  # a and b are untouched slots: zero gradient and moments, only weights move
            self.table[a], self.table[b] = self.table[b].clone(), self.table[a].clone()
            ra, rb = self.row_of_slot[a].clone(), self.row_of_slot[b].clone()
            self.row_of_slot[a], self.row_of_slot[b] = rb, ra
            self.slot_of_row[ra], self.slot_of_row[rb] = b, a
        self.active.fill_(n + len(new))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            self._activate(ids)
            slots = self.slot_of_row[ids]
            self.dirty.append(slots.reshape(-1))
            return _GatherRows.apply(slots, self.table)
        return F.embedding(self.slot_of_row[ids], self.table)

    @torch.no_grad()
    def zero_grad_rows(self) -> None:
        """Zero only the rows given gradient since the last call (the rest of ``table.grad`` is already zero)."""
        if self.table.grad is not None and self.dirty:
            self.table.grad.index_fill_(0, torch.cat(self.dirty).unique(), 0.0)
        self.dirty.clear()

    def row_weight(self) -> torch.Tensor:
        """The embedding table in vocabulary order."""
        return self.table.detach()[self.slot_of_row]


# --------------------------------------------------------------------------- optimizer


class FastAdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay, as ``torch.optim.AdamW``) through one ``torch._fused_adamw_`` call per
    parameter group, updating only the active prefix of each :class:`SparseRowEmbedding` table.

    A plain ``torch.optim.Optimizer``: the scheduler sets ``lr`` in ``param_groups``, state is the standard
    ``step``/``exp_avg``/``exp_avg_sq`` per parameter, so ``state_dict`` round-trips through checkpoints.
    ``zero_grad`` sets dense gradients to None and zeroes only the dirty rows of sparse tables."""

    def __init__(self, params: Any, sparse: list[SparseRowEmbedding], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self.sparse = {id(s.table): s for s in sparse}
        self._grad_scale: torch.Tensor | None = None  # set by clip_grad_norm_, used by the next step
        for group in self.param_groups:
            if group["weight_decay"] and any(id(p) in self.sparse for p in group["params"]):
                raise ValueError("FastAdamW: a sparse embedding table is exact only with weight decay 0")

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            ps, gs, ms, vs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:  # on the parameter's device: the fused kernel takes every tensor from one device
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                p_, g, m, v = p, p.grad, state["exp_avg"], state["exp_avg_sq"]
                emb = self.sparse.get(id(p))
                if emb is not None:  # the prefix only: the rest has zero gradient and zero moments
                    n = emb.n_active
                    p_, g, m, v = p[:n], g[:n], m[:n], v[:n]
                ps.append(p_), gs.append(g), ms.append(m), vs.append(v), steps.append(state["step"])
            if not ps:
                continue
            torch._foreach_add_(steps, 1)
            beta1, beta2 = group["betas"]
            torch._fused_adamw_(ps, gs, ms, vs, [], steps, lr=group["lr"], beta1=beta1, beta2=beta2,
                                weight_decay=group["weight_decay"], eps=group["eps"], amsgrad=False,
                                maximize=False, grad_scale=self._grad_scale, found_inf=None)
        self._grad_scale = None

    def _grads(self) -> list[torch.Tensor]:
        """Every gradient the step reads: a sparse table's active prefix only (its other rows are zero)."""
        grads = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    emb = self.sparse.get(id(p))
                    grads.append(p.grad if emb is None else p.grad[: emb.n_active])
        return grads

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """``torch.nn.utils.clip_grad_norm_`` over this optimizer's parameters with the same effect on the next
        :meth:`step`, at about half its cost: the norm skips the zero rows of sparse tables (47 MB per step
        for MiniLM), and the rescaling is not a pass of its own but folded into the step (the fused kernel's
        ``grad_scale`` divides each gradient as it reads it). So until ``step`` the ``.grad`` tensors are
        unscaled; ``zero_grad`` drops a pending scale."""
        norm = torch.nn.utils.get_total_norm(self._grads())
        # 1 / clip_grad_norm_'s coefficient, kept on the device (no host sync); 1 within the norm (x / 1 is exact)
        self._grad_scale = ((norm + 1e-6) / max_norm).clamp(min=1.0).to(torch.float32)
        return norm

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._grad_scale = None
        for group in self.param_groups:
            for p in group["params"]:
                if id(p) not in self.sparse:
                    p.grad = None
        for emb in self.sparse.values():
            emb.zero_grad_rows()
