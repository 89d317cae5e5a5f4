"""A BERT encoder for fast fine-tuning on CPUs, loading Hugging Face ``BertModel`` weights.

Same parameters and math as ``transformers.BertModel`` (absolute positions, token type 0); only the way it
is computed differs, each piece for a reason measured in ``benchmarks/BERT_CPU_NOTES.md``:

* :class:`FastBertLayer` - Q, K and V are one [3H, H] linear (one GEMM instead of three; ``unbind`` backward is
  one stack), no attention-interface dispatch, and the attention mask is skipped for batches without padding.
* :func:`fast_dropout` - masks from 16-bit lanes of one int64 draw per four elements (``bernoulli_``, what
  ``F.dropout`` uses, was ~13 % of a step); same expectation, p rounded to 1/65536, another random stream.
* :class:`SparseRowEmbedding` - the word embedding keeps the rows touched so far as a prefix of its table
  (rows permuted into slots on first touch) and index-adds their gradient into a persistent ``.grad``, so
  no step makes, zero-fills or updates a dense 47 MB gradient. :class:`FastAdamW` updates only that prefix
  (exact with weight decay 0: an untouched row has zero gradient and zero moments, which AdamW leaves
  unchanged). The table is a real Parameter with a real ``.grad`` (its rows past the prefix are zero);
  :meth:`FastAdamW.clip_grad_norm_`, which the training loop prefers to the generic one, skips those rows.

All of this is for one CPU process: which paths a run takes is decided in one place,
``nlpkit.train.hardware.speed_paths`` (from the device type and the process count). Under DDP the word-embedding
gradient would not be all-reduced (it bypasses autograd's accumulation), and on a GPU the stock kernels are the fast
ones, so there the ``bert`` plugin uses ``transformers`` (SDPA attention, torch's fused AdamW); a model saved in one
layout is converted to the other on load (:func:`to_speed_layout`, both directions read one name map,
:func:`hf_layout`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nlpkit.errors import NlpkitError
from nlpkit.train.hardware import sequence_multiple, speed_paths

# --------------------------------------------------------------------------- dropout


def mask_drop_probability(p: float) -> float:
    """The probability :func:`dropout_mask` really drops an element with: p rounded to a multiple of 1/65536."""
    return round(p * 65536) / 65536


def dropout_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """Bool tensor, True where an element is dropped (probability :func:`mask_drop_probability`)."""
    n = math.prod(shape)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
    return bits.view(torch.int16)[:n].lt(-32768 + round(p * 65536)).view(shape)


class _MaskedScale(torch.autograd.Function):
    """y = x * scale, dropped elements zeroed; saves only the bool mask."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, drop: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(drop)
        ctx.scale = scale
        return x.mul(scale).masked_fill_(drop, 0.0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (drop,) = ctx.saved_tensors
        return grad.mul(ctx.scale).masked_fill_(drop, 0.0), None, None


def fast_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout(x, p, training)`` with :func:`dropout_mask` (CPU tensors; elsewhere ``F.dropout``). The kept
    elements are scaled by 1 / (1 - the mask's real drop probability), so the expectation is exactly x."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    dropped = mask_drop_probability(p)
    if dropped >= 1.0:  # every element dropped (F.dropout with p = 1 gives zeros too)
        return x * 0.0
    return _MaskedScale.apply(x, dropout_mask(x.shape, p), 1.0 / (1.0 - dropped))


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


# --------------------------------------------------------------------------- encoder


class FastBertLayer(nn.Module):
    def __init__(self, config: Any):
        super().__init__()
        h = config.hidden_size
        self.heads, self.head_dim = config.num_attention_heads, h // config.num_attention_heads
        self.qkv = nn.Linear(h, 3 * h)
        self.attn_out = nn.Linear(h, h)
        self.ln1 = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.inter = nn.Linear(h, config.intermediate_size)
        self.out = nn.Linear(config.intermediate_size, h)
        self.ln2 = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.p_hidden, self.p_attn = config.hidden_dropout_prob, config.attention_probs_dropout_prob
        self.act = {"gelu": F.gelu, "relu": F.relu}[config.hidden_act]

    def forward(self, x: torch.Tensor, add_mask: torch.Tensor | None) -> torch.Tensor:
        b, s, h = x.shape
        tr = self.training
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if not tr:  # inference: the fused kernel never holds the (batch, heads, s, s) scores, the peak of a long batch
            mask = None if add_mask is None else add_mask.to(q.dtype)
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, s, h)
            x = self.ln1(self.attn_out(context) + x)
            return self.ln2(self.out(self.act(self.inter(x))) + x)
        scores = torch.matmul(q, k.transpose(-1, -2))
        scale = 1.0 / math.sqrt(self.head_dim)
        scores = scores.mul(scale) if add_mask is None else torch.add(add_mask, scores, alpha=scale)
        probs = fast_dropout(torch.softmax(scores, dim=-1), self.p_attn, tr)
        context = torch.matmul(probs, v).transpose(1, 2).reshape(b, s, h)
        x = self.ln1(fast_dropout(self.attn_out(context), self.p_hidden, tr) + x)
        return self.ln2(fast_dropout(self.out(self.act(self.inter(x))), self.p_hidden, tr) + x)


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor | None = None


class FastBertEncoder(nn.Module):
    """``transformers.BertModel``'s forward (``input_ids``, ``attention_mask`` -> last_hidden_state,
    pooler_output) for a ``model_type == "bert"`` config."""

    def __init__(self, config: Any, pooler: bool):
        super().__init__()
        h = config.hidden_size
        self.config = config
        self.word = SparseRowEmbedding(torch.zeros(config.vocab_size, h))
        self.position = nn.Parameter(torch.zeros(config.max_position_embeddings, h))
        self.token_type = nn.Parameter(torch.zeros(config.type_vocab_size, h))
        self.emb_ln = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(FastBertLayer(config) for _ in range(config.num_hidden_layers))
        self.pooler = nn.Linear(h, h) if pooler else None

    @staticmethod
    def supports(config: Any) -> bool:
        return (getattr(config, "model_type", None) == "bert" and config.hidden_act in ("gelu", "relu")
                and getattr(config, "position_embedding_type", "absolute") == "absolute")

    @classmethod
    def from_hf(cls, hf: nn.Module, pooler: bool) -> FastBertEncoder:
        """The fast encoder with the weights of a ``transformers.BertModel`` (with a pooling layer when ``pooler``)."""
        return cls.from_hf_state(hf.config, hf.state_dict(), pooler)

    @classmethod
    @torch.no_grad()
    def from_hf_state(cls, config: Any, state: dict[str, torch.Tensor], pooler: bool) -> FastBertEncoder:
        """The fast encoder with the weights of a ``transformers.BertModel`` state dict. Every weight must find its
        place and fit it: a missing, renamed, extra or misshapen key is an error naming it, never a silently
        random (or broadcast) weight."""
        with torch.random.fork_rng():  # the weights are overwritten: leave the RNG as transformers left it
            m = cls(config, pooler)
        layout = hf_layout(config.num_hidden_layers, pooler)
        wanted = {name for _, names in layout for name in names}
        missing = sorted(wanted - state.keys())
        unused = sorted(k for k in state.keys() - wanted if k not in HF_BUFFERS)
        if missing or unused:
            raise NlpkitError("The pretrained BERT weights do not fit the fast encoder: "
                              + "; ".join(f"{what}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                                          for what, keys in (("missing", missing), ("not used", unused)) if keys))
        mine = dict(m.named_parameters())
        for target, names in layout:
            dest = mine[target]
            part = (dest.shape[0] // len(names), *dest.shape[1:])
            wrong = [f"{n} {tuple(state[n].shape)}" for n in names if tuple(state[n].shape) != part]
            if wrong:
                raise NlpkitError(f"The pretrained BERT weight {', '.join(wrong)} does not have the shape the "
                                  f"config gives it {part} (fast encoder parameter {target})")
            dest.copy_(torch.cat([state[n] for n in names]) if len(names) > 1 else state[names[0]])
        return m

    @torch.no_grad()
    def hf_state(self) -> dict[str, torch.Tensor]:
        """These weights under ``transformers.BertModel``'s names (the word table in vocabulary order)."""
        mine = {name: p.detach() for name, p in self.named_parameters()}
        mine["word.table"] = self.word.row_weight()
        out = {}
        for target, names in hf_layout(self.config.num_hidden_layers, self.pooler is not None):
            for name, part in zip(names, mine[target].chunk(len(names))):
                out[name] = part.clone()
        return out

    def to_hf(self, **hf_options: Any) -> nn.Module:
        """The same weights in a ``transformers.BertModel`` (the stock layout: DDP, GPUs)."""
        from transformers import AutoModel

        with torch.random.fork_rng():
            hf = AutoModel.from_config(self.config, add_pooling_layer=self.pooler is not None, **hf_options)
        missing, unexpected = hf.load_state_dict(self.hf_state(), strict=False)
        missing = [k for k in missing if k not in HF_BUFFERS]
        if missing or unexpected:
            raise NlpkitError(f"Converting the fast encoder to transformers' layout left {missing or unexpected} "
                              "unmatched")
        return hf.to(self.position.device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> EncoderOutput:
        s = input_ids.shape[1]
        extra = -s % sequence_multiple(input_ids.device.type)  # few distinct GEMM shapes where kernels are per shape
        if extra and s + extra <= self.position.shape[0]:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            input_ids = F.pad(input_ids, (0, extra), value=self.config.pad_token_id or 0)
            attention_mask = F.pad(attention_mask, (0, extra), value=0)
            out = self.forward(input_ids, attention_mask)
            return EncoderOutput(out.last_hidden_state[:, :s], out.pooler_output)
        x = self.word(input_ids) + (self.position[:s] + self.token_type[0])
        x = fast_dropout(self.emb_ln(x), self.config.hidden_dropout_prob, self.training)
        add_mask = None
        if attention_mask is not None and not bool(attention_mask.all()):  # most length-bucketed batches: no pad
            add_mask = torch.zeros(attention_mask.shape, dtype=x.dtype, device=x.device)
            add_mask = add_mask.masked_fill_(attention_mask == 0, torch.finfo(x.dtype).min)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, add_mask)
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None
        return EncoderOutput(x, pooled)


HF_BUFFERS = {"embeddings.position_ids", "embeddings.token_type_ids"}  # transformers' buffers, not weights


def hf_layout(layers: int, pooler: bool) -> list[tuple[str, tuple[str, ...]]]:
    """Each fast-encoder parameter and the ``transformers.BertModel`` weights it is made of (concatenated along
    the first dimension: Q, K and V make ``qkv``). The one map both conversions read."""
    out = [("word.table", ("embeddings.word_embeddings.weight",)),
           ("position", ("embeddings.position_embeddings.weight",)),
           ("token_type", ("embeddings.token_type_embeddings.weight",)),
           ("emb_ln.weight", ("embeddings.LayerNorm.weight",)), ("emb_ln.bias", ("embeddings.LayerNorm.bias",))]
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            qkv = tuple(f"{p}attention.self.{n}.{kind}" for n in ("query", "key", "value"))
            out += [(f"layers.{i}.qkv.{kind}", qkv),
                    (f"layers.{i}.attn_out.{kind}", (f"{p}attention.output.dense.{kind}",)),
                    (f"layers.{i}.ln1.{kind}", (f"{p}attention.output.LayerNorm.{kind}",)),
                    (f"layers.{i}.inter.{kind}", (f"{p}intermediate.dense.{kind}",)),
                    (f"layers.{i}.out.{kind}", (f"{p}output.dense.{kind}",)),
                    (f"layers.{i}.ln2.{kind}", (f"{p}output.LayerNorm.{kind}",))]
    if pooler:
        out += [("pooler.weight", ("pooler.dense.weight",)), ("pooler.bias", ("pooler.dense.bias",))]
    return out


def fast_encoder_fits(config: Any) -> bool:
    """Whether a pretrained encoder is trained as :class:`FastBertEncoder`: a BERT config, where the speed rule
    (``nlpkit.train.hardware.speed_paths``: one CPU process) takes the fast paths. Under DDP the sparse word embedding's
    gradient would bypass autograd's accumulation, where DDP all-reduces; on a GPU the stock kernels are faster."""
    return speed_paths().fast_encoder and FastBertEncoder.supports(config)


def to_speed_layout(encoder: nn.Module, fast: bool, **hf_options: Any) -> nn.Module:
    """A loaded ``encoder`` in the layout the speed rule wants here (same weights, same math): a saved fast encoder
    becomes a ``transformers`` one on a GPU or under DDP, and a saved ``transformers`` BERT becomes the fast one on
    a single CPU process when the model's ``fast`` option asks for it."""
    if isinstance(encoder, FastBertEncoder):
        return encoder if speed_paths().fast_encoder else encoder.to_hf(**hf_options)
    if fast and fast_encoder_fits(encoder.config):
        return FastBertEncoder.from_hf(encoder, pooler=getattr(encoder, "pooler", None) is not None)
    return encoder


def fast_adamw(encoder: nn.Module, groups: list[dict[str, Any]], lr: float) -> FastAdamW | None:
    """FastAdamW over ``groups`` when ``encoder`` is a :class:`FastBertEncoder` whose word table is not decayed
    (weight decay touches every row every step: the plain AdamW does that); else None."""
    if not isinstance(encoder, FastBertEncoder):
        return None
    table = encoder.word.table
    if any(g["weight_decay"] and any(p is table for p in g["params"]) for g in groups):
        return None
    return FastAdamW(groups, sparse=[encoder.word], lr=lr)
