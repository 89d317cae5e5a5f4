"""A BERT encoder for fast fine-tuning on CPUs, loading Hugging Face ``BertModel`` weights.

Same parameters and math as ``transformers.BertModel`` (absolute positions, token type 0); only the way it
is computed differs, each piece for a reason measured in ``benchmarks/BERT_CPU_NOTES.md``:

* :class:`FastBertLayer` - Q, K and V are one [3H, H] linear (one GEMM instead of three; ``unbind`` backward is
  one stack), no attention-interface dispatch, and the attention mask is skipped for batches without padding.
* :func:`fast_dropout` - masks from 16-bit lanes of one int64 draw per four elements (``bernoulli_``, what
  ``F.dropout`` uses, was ~13 % of a step); same expectation, p rounded to 1/65536, another random stream.
* :class:`~nlpkit_plugins.models.bert.sparse_rows.SparseRowEmbedding` and its :class:`FastAdamW`
  (``sparse_rows.py``) - the word table updates only the rows touched so far.

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
from nlpkit_plugins.models.bert.bf16_weights import Bf16Weights, bf16_autocast_on
from nlpkit_plugins.models.bert.sparse_rows import FastAdamW, SparseRowEmbedding
from torch import nn

from nlpkit.errors import NlpkitError
from nlpkit.train.hardware import sequence_multiple, speed_paths

# --------------------------------------------------------------------------- dropout

_BF16_ONE = 0x3F80  # the bits of bfloat16 1.0


def mask_drop_probability(p: float) -> float:
    """The probability :func:`keep_multiplier` really drops an element with: p rounded to a multiple of 1/32768."""
    return round(p * 32768) / 32768


def keep_scale(p: float) -> float:
    """What kept elements are multiplied by: 1 / (1 - :func:`mask_drop_probability`), 0 when it is 1."""
    dropped = mask_drop_probability(p)
    return 0.0 if dropped >= 1.0 else 1.0 / (1.0 - dropped)


def keep_multiplier(shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype,
                    device: torch.device | None = None) -> tuple[torch.Tensor, float]:
    """A dropout mask as a tensor to multiply by, and the scale still owed: ``x * m * rest`` is dropout of x.

    Why not a bool mask: on a CPU, every kernel reading a bool tensor (``masked_fill``, ``where``, ``x * mask``) ran
    ~5x slower than a same-dtype multiply (200 vs 40 us for a [8, 12, 56, 56] bf16 tensor, Intel Xeon, 2 cores),
    and ``bernoulli_`` (``F.dropout``) ~5x slower again. So: 16 random bits per element, from one int64 draw per
    four elements, compared with integer arithmetic only (a shift, a subtraction, a shift: -1 kept, 0 dropped); in
    bf16 the -1s become 1.0 with one bitwise and (``rest`` = the keep scale, which bf16 cannot hold exactly), in
    other dtypes a conversion that takes the scale along (``rest`` = 1)."""
    n = math.prod(shape)
    lanes = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None).view(torch.int16)[:n]
    kept = ((round(p * 32768) - 16385) - (lanes >> 1)) >> 15  # lanes >> 1 is uniform on [-16384, 16383]
    if dtype == torch.bfloat16:
        return kept.bitwise_and_(_BF16_ONE).view(dtype).view(shape), keep_scale(p)
    return kept.to(dtype).mul_(-keep_scale(p)).view(shape), 1.0


def fast_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout(x, p, training)`` with :func:`keep_multiplier` (CPU tensors; elsewhere ``F.dropout``). Kept
    elements are scaled by :func:`keep_scale`, so the expectation is exactly x."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    m, rest = keep_multiplier(x.shape, p, x.dtype, x.device)
    return x * m if rest == 1.0 else (x * m).mul_(rest)


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

    def forward(self, x: torch.Tensor, add_mask: torch.Tensor | None,
                work: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        """``work``: bf16 copies of the linears' weights by ``id(linear)`` (:class:`Bf16Weights`), else the weights."""
        b, s, h = x.shape
        tr = self.training

        def lin(m: nn.Linear, t: torch.Tensor) -> torch.Tensor:
            return m(t) if work is None else F.linear(t, *work[id(m)])

        q, k, v = lin(self.qkv, x).view(b, s, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if not tr:  # inference: the fused kernel never holds the (batch, heads, s, s) scores, the peak of a long batch
            mask = None if add_mask is None else add_mask.to(q.dtype)
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, s, h)
            x = self.ln1(lin(self.attn_out, context) + x)
            return self.ln2(lin(self.out, self.act(lin(self.inter, x))) + x)
        # Training: dropout's scale rides on passes made anyway (v is copied to a contiguous layout for the matmul:
        # the copy scales it; the residual add takes an alpha), so dropping is one same-dtype multiply each way.
        q = q * (1.0 / math.sqrt(self.head_dim))
        scores = torch.matmul(q, k.transpose(-1, -2))
        probs = torch.softmax(scores if add_mask is None else scores.add_(add_mask), dim=-1)
        if self.p_attn:
            m, rest = keep_multiplier(probs.shape, self.p_attn, probs.dtype, probs.device)
            probs, v = probs * m, (v * rest if rest != 1.0 else v)
        context = torch.matmul(probs, v).transpose(1, 2).reshape(b, s, h)
        x = self.ln1(self._residual(x, lin(self.attn_out, context)))
        return self.ln2(self._residual(x, lin(self.out, self.act(lin(self.inter, x)))))

    def _residual(self, x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        """x + dropout(branch) in training (``branch``: a linear's output, which its backward does not need)."""
        if not self.p_hidden:
            return branch.add_(x)
        m, rest = keep_multiplier(branch.shape, self.p_hidden, branch.dtype, branch.device)
        return torch.add(x, branch.mul_(m), alpha=rest)


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
        self._bf16: Bf16Weights | None = None  # not a submodule: no state dict entry

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
        x = self.states(input_ids, attention_mask)
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None
        return EncoderOutput(x, pooled)

    def states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, first: int = 0,
               last: int | None = None, below: torch.Tensor | None = None) -> torch.Tensor:
        """The hidden states after ``layers[first:last]``: from the embeddings of ``input_ids`` (``first`` = 0) or
        from ``below``, the states after layer ``first - 1`` (a frozen bottom's cached output, see
        ``seq2seq.FrozenBottom``). Batches are padded to :func:`sequence_multiple` and cut back."""
        s = input_ids.shape[1]
        extra = -s % sequence_multiple(input_ids.device.type)  # few distinct GEMM shapes where kernels are per shape
        if extra and s + extra <= self.position.shape[0]:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            input_ids = F.pad(input_ids, (0, extra), value=self.config.pad_token_id or 0)
            attention_mask = F.pad(attention_mask, (0, extra), value=0)
            below = None if below is None else F.pad(below, (0, 0, 0, extra))
            return self.states(input_ids, attention_mask, first, last, below)[:, :s]
        if below is None:
            x = self.word(input_ids) + (self.position[:s] + self.token_type[0])
            x = fast_dropout(self.emb_ln(x), self.config.hidden_dropout_prob, self.training)
        else:
            x = below
        work = self._bf16_weights(x)
        if work is not None:
            x = x.to(torch.bfloat16)  # once here, not in each layer's first matmul (and its gradient back)
        add_mask = None
        if attention_mask is not None and not bool(attention_mask.all()):  # most length-bucketed batches: no pad
            add_mask = torch.zeros(attention_mask.shape, dtype=x.dtype, device=x.device)
            add_mask = add_mask.masked_fill_(attention_mask == 0, torch.finfo(x.dtype).min)[:, None, None, :]
        for layer in self.layers[first:last]:
            x = layer(x, add_mask, work)
        return x

    def _bf16_weights(self, x: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]] | None:
        """bf16 copies of the layers' linears where bf16 autocast runs on a CPU and the weights are fp32 (else
        None: autocast or fp32 as usual). Made on first use, refreshed only after the weights change."""
        if not bf16_autocast_on(x.device.type) or self.position.dtype != torch.float32:
            return None
        if self._bf16 is None or self._bf16.copies[0].device != x.device:
            self._bf16 = Bf16Weights([m for layer in self.layers
                                      for m in (layer.qkv, layer.attn_out, layer.inter, layer.out)])
        return self._bf16.current()


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
