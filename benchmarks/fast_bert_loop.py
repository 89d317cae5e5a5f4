"""Fast plain-PyTorch BERT fine-tuning loop for CPUs (fp32, no native bf16).

Self-contained: only ``torch`` is needed for training; ``transformers`` is used
only to read the tokenizer and the pretrained weights (so the model is the very
same ``BertForSequenceClassification``: BertModel + pooler + dropout + linear head,
dropout probabilities from the config, identical initial weights for a given seed).

Each speed trick is a small, separate, reusable piece (see the docstrings for
why and what it measured on the 2-core AMD EPYC / AVX2 box, numbers in
``BERT_CPU_NOTES.md``):

* :func:`pretokenize` / :func:`collate`           - tokenize once, pad per batch only.
* :func:`length_bucketed_batches`                  - sort the whole sampled pool by length.
* :func:`dropout_mask` / :func:`fast_dropout`      - 16-bit-lane dropout masks (4 per RNG draw).
* :class:`SparseRowEmbedding` + :class:`FusedAdamW` with ``prefix_rows`` -
  word-embedding rows touched so far only (exact with weight decay 0).
* :class:`FusedAdamW`                              - one ``torch._fused_adamw_`` call, no per-step
  python grouping, gradient clipping folded into the kernel via ``grad_scale``.
* :func:`global_grad_norm`                          - one ``_foreach_norm`` over all grads.
* :class:`FastBertForSequenceClassification`       - fused QKV projection, no HF mask/attention-
  interface overhead, attention mask skipped for batches without padding.

Run as a script it is the "fast" worker of ``bert_vs_trainer.py`` and prints one JSON line.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import os
import random
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# --------------------------------------------------------------------------- data

def load_ag_news(data_dir: str, split: str):
    """Read ``ag_news_small/{split}.csv.gz`` -> (texts, labels 0..3)."""
    path = os.path.join(data_dir, f"{split}.csv.gz")
    texts, labels = [], []
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        for row in csv.reader(fh):
            labels.append(int(row[0]) - 1)
            texts.append(row[1] + " " + row[2])
    return texts, labels


def pretokenize(tokenizer, texts, max_length: int = 128):
    """Tokenize every text once, without padding: a list of token-id lists.

    Why: padding is done per batch in :func:`collate`, so batches carry only
    their own longest length.  (The whole 6,000-row train split takes ~0.5 s
    with a fast tokenizer; it is done before the timed loop in both workers.)
    """
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    return enc["input_ids"]


def sample_pool(n_examples: int, batch_size: int, num_steps: int, seed: int):
    """The example indices a random sampler would visit in ``num_steps`` batches
    (successive random epochs, like ``Trainer``'s RandomSampler)."""
    g = torch.Generator().manual_seed(seed)
    need = batch_size * num_steps
    pool = []
    while len(pool) < need:
        pool.extend(torch.randperm(n_examples, generator=g).tolist())
    return pool[:need]


def length_bucketed_batches(lengths, batch_size: int, num_steps: int, seed: int,
                            megabatch: int | None = None):
    """Length-bucketed batches: sort the sampled pool by length, cut, shuffle batches.

    Why: ``group_by_length`` sorts within megabatches of 50 batches (400 examples),
    leaving ~1.8 % padding on AG News (53.1 padded tokens/example vs 52.2 real).
    Sorting the whole 4,000-example pool (``megabatch=None``) leaves 0.2 %
    (52.26), and ~70 % of the batches are then exactly one length, so
    the model can skip the attention mask for them (see
    :func:`collate`).  Ties are broken randomly and the batch order is shuffled,
    so consecutive steps are not ordered by length.  Gain: ~2 % fewer tokens,
    plus the skipped masks.

    Returns a list of ``num_steps`` lists of example indices.
    """
    rng = random.Random(seed + 1)
    pool = sample_pool(len(lengths), batch_size, num_steps, seed)
    mb = megabatch or len(pool)
    batches = []
    for start in range(0, len(pool), mb):
        chunk = pool[start:start + mb]
        keyed = sorted(chunk, key=lambda i: (lengths[i], rng.random()))
        batches.extend(keyed[k:k + batch_size] for k in range(0, len(keyed), batch_size))
    rng.shuffle(batches)
    return batches[:num_steps]


def collate(token_lists, pad_id: int = 0):
    """Pad a list of token-id lists -> (input_ids [B,S] int64, attention_mask or None).

    The mask is ``None`` when every row has the same length, which lets the
    model skip building/adding the additive mask.
    """
    lens = [len(t) for t in token_lists]
    s = max(lens)
    if min(lens) == s:
        return torch.tensor(token_lists, dtype=torch.long), None
    ids = torch.full((len(token_lists), s), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_lists), s), dtype=torch.bool)
    for i, t in enumerate(token_lists):
        ids[i, :len(t)] = torch.tensor(t, dtype=torch.long)
        mask[i, :len(t)] = True
    return ids, mask


# --------------------------------------------------------------------------- dropout

_INT16_MIN = -32768


def dropout_mask(shape, p: float) -> torch.Tensor:
    """Bool tensor, True where an element is dropped, each with probability ~p.

    Why: ``bernoulli_`` (what ``F.dropout`` uses) runs single-threaded and draws
    one random number per element; it was ~13 % of a BERT step here.  This draws
    one 64-bit number per *four* elements (``random_`` on int64 over the full
    range), reinterprets it as four int16 lanes and compares each lane with a
    threshold (multithreaded compare).  The drop probability is
    ``round(p*65536)/65536`` (0.100006 for p=0.1).  Measured on the 2-core EPYC,
    for a 8x12x52x52 attention-probability tensor: ``F.dropout`` 3.0 ms,
    mask 0.4-0.6 ms + apply 0.25 ms.
    """
    n = 1
    for d in shape:
        n *= d
    n4 = (n + 3) // 4
    bits = torch.empty(n4, dtype=torch.int64).random_(-(2 ** 63), None)
    thresh = _INT16_MIN + int(round(p * 65536))
    lanes = bits.view(torch.int16)
    if lanes.numel() != n:
        lanes = lanes[:n]
    return lanes.lt(thresh).view(shape)


class _MaskedScale(torch.autograd.Function):
    """y = x * scale with masked elements zeroed; saves only the bool mask."""

    @staticmethod
    def forward(ctx, x, drop, scale):
        ctx.save_for_backward(drop)
        ctx.scale = scale
        return x.mul(scale).masked_fill_(drop, 0.0)

    @staticmethod
    def backward(ctx, g):
        (drop,) = ctx.saved_tensors
        return g.mul(ctx.scale).masked_fill_(drop, 0.0), None, None


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Drop-in replacement for ``F.dropout(x, p, training)`` using :func:`dropout_mask`.

    Same expectation and (to 6e-6 in p) the same distribution of masks as
    inverted dropout; only the random stream differs.
    """
    if not training or p == 0.0:
        return x
    return _MaskedScale.apply(x, dropout_mask(x.shape, p), 1.0 / (1.0 - p))


# --------------------------------------------------------------------------- sparse word embeddings

class _GatherRows(torch.autograd.Function):
    """out = table[idx]; backward accumulates into a persistent ``grad_buf`` (no dense grad)."""

    @staticmethod
    def forward(ctx, idx, table, grad_buf):
        ctx.save_for_backward(idx)
        ctx.grad_buf = grad_buf
        return F.embedding(idx, table)

    @staticmethod
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        ctx.grad_buf.index_add_(0, idx.reshape(-1), g.reshape(-1, g.shape[-1]))
        return None, None, None


class SparseRowEmbedding(nn.Module):
    """Word embedding that trains only the rows touched so far, stored compactly.

    Why: a batch of 8 AG News examples touches ~300 of the 30,522 rows, and 500
    steps touch ~9,900.  A normal ``nn.Embedding`` makes a dense 47 MB gradient
    every step (zero fill + index_add), clips it, and runs AdamW over all 11.7 M
    elements.  Here rows get a *slot* the first time they are seen, in order of
    first touch, so "rows touched so far" is always the prefix ``[:n_active]`` of
    the compact tables ``weight_c``, ``grad_c`` (and the optimizer's ``exp_avg``/
    ``exp_avg_sq``).  The backward pass index-adds straight into ``grad_c``.

    Exactness: with weight decay 0, a row never touched has zero gradient and
    zero Adam moments, so dense AdamW leaves it unchanged; once touched, it is
    updated every step (with zero gradient when absent from the batch), exactly
    as in dense AdamW, including the bias correction, which uses the global step.

    API:
      ``emb = SparseRowEmbedding(weight)``  (weight: the pretrained [V, D] table, copied)
      ``emb(input_ids)``                     -> [B, S, D]  (assigns slots to new ids)
      ``emb.n_active``                       rows touched so far
      ``emb.active_params()``                (weight_c[:n], grad_c[:n]) views for the optimizer
      ``emb.batch_slots``                    unique slots of the last batch (for the grad norm)
      ``emb.zero_grad_rows()``               zero only the last batch's rows of ``grad_c``
      ``emb.full_weight()``                  [V, D] table with the trained rows written back
    """

    def __init__(self, weight: torch.Tensor, capacity: int | None = None):
        super().__init__()
        v, d = weight.shape
        # not cloned: the table is taken over (and written back by full_weight())
        self.register_buffer("weight", weight.detach(), persistent=False)
        cap = capacity or v
        # torch.empty: pages of never-used slots are never touched, so never resident.
        self.weight_c = nn.Parameter(torch.empty(cap, d), requires_grad=True)
        self.grad_c = torch.empty(cap, d)
        self.slot_of = torch.full((v,), -1, dtype=torch.long)
        self.row_of_slot = torch.empty(cap, dtype=torch.long)
        self.n_active = 0
        self.batch_slots = torch.empty(0, dtype=torch.long)
        self.new_slot_hook = None  # called with (start, stop) when slots are added

    @torch.no_grad()
    def assign_slots(self, input_ids: torch.Tensor) -> torch.Tensor:
        uniq = torch.unique(input_ids)
        slots = self.slot_of[uniq]
        new = uniq[slots < 0]
        if new.numel():
            a, b = self.n_active, self.n_active + new.numel()
            self.slot_of[new] = torch.arange(a, b)
            self.row_of_slot[a:b] = new
            self.weight_c.data[a:b] = self.weight[new]
            self.grad_c[a:b].zero_()
            self.n_active = b
            if self.new_slot_hook is not None:
                self.new_slot_hook(a, b)
        self.batch_slots = self.slot_of[uniq]
        return self.slot_of[input_ids]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not self.training or not torch.is_grad_enabled():
            return F.embedding(input_ids, self.full_weight())
        slot_ids = self.assign_slots(input_ids)
        return _GatherRows.apply(slot_ids, self.weight_c, self.grad_c)

    def active_params(self):
        n = self.n_active
        return self.weight_c.data[:n], self.grad_c[:n]

    def batch_grad_sq_norm(self) -> torch.Tensor:
        """Squared L2 norm of this step's gradient (only the batch rows are non-zero)."""
        g = self.grad_c.index_select(0, self.batch_slots)
        return (g * g).sum()

    def zero_grad_rows(self):
        self.grad_c.index_fill_(0, self.batch_slots, 0.0)

    @torch.no_grad()
    def full_weight(self) -> torch.Tensor:
        n = self.n_active
        if n:
            self.weight.index_copy_(0, self.row_of_slot[:n], self.weight_c.data[:n])
        return self.weight


# --------------------------------------------------------------------------- optimizer / clipping

class FusedAdamW:
    """AdamW through a single ``torch._fused_adamw_`` call per step.

    Why: ``torch.optim.AdamW(fused=True)`` (the Trainer default) re-groups the
    tensors by device/dtype, bumps one step tensor per parameter and checks
    state in python every step.  Here the lists are built once; the step count
    is one shared tensor; gradient clipping is folded into the kernel through
    ``grad_scale`` (the kernel divides each gradient by it), so there is no
    separate ``_foreach_mul_`` pass over the gradients.  Also carries the
    compact word-embedding rows of a :class:`SparseRowEmbedding` (``sparse=``),
    whose Adam moments live in prefix views that grow with ``n_active``.

    API:
      ``opt = FusedAdamW(dense_params, sparse=emb_or_None, lr=2e-5, betas=(0.9, 0.999),
                         eps=1e-8, weight_decay=0.0)``
      ``opt.step(lr, grad_scale=None)``   grad_scale: 0-dim float tensor (>= 1) or None
      ``opt.zero_grad()``                 dense grads set to None, sparse batch rows zeroed
    """

    def __init__(self, params, sparse: SparseRowEmbedding | None = None, lr=2e-5,
                 betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.params = [p for p in params if p.requires_grad]
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.lr, self.betas, self.eps, self.wd = lr, betas, eps, weight_decay
        self.step_t = torch.zeros((), dtype=torch.float32)
        self.sparse = sparse
        if sparse is not None:
            if weight_decay != 0.0:
                raise ValueError("SparseRowEmbedding updates are exact only with weight_decay=0")
            cap, d = sparse.weight_c.shape
            self.sp_m = torch.empty(cap, d)
            self.sp_v = torch.empty(cap, d)

            def _init(a, b):
                self.sp_m[a:b].zero_()
                self.sp_v[a:b].zero_()
            sparse.new_slot_hook = _init

    @torch.no_grad()
    def step(self, lr: float | None = None, grad_scale: torch.Tensor | None = None):
        lr = self.lr if lr is None else lr
        self.step_t += 1
        ps, gs, ms, vs = [], [], [], []
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            if p.grad is not None:
                ps.append(p)
                gs.append(p.grad)
                ms.append(m)
                vs.append(v)
        if self.sparse is not None and self.sparse.n_active:
            w, g = self.sparse.active_params()
            n = self.sparse.n_active
            ps += [w]
            gs += [g]
            ms += [self.sp_m[:n]]
            vs += [self.sp_v[:n]]
        torch._fused_adamw_(ps, gs, ms, vs, [], [self.step_t] * len(ps), lr=lr,
                            beta1=self.betas[0], beta2=self.betas[1], weight_decay=self.wd,
                            eps=self.eps, amsgrad=False, maximize=False,
                            grad_scale=grad_scale, found_inf=None)

    def zero_grad(self):
        for p in self.params:
            p.grad = None
        if self.sparse is not None:
            self.sparse.zero_grad_rows()


def global_grad_norm(params, extra_sq: torch.Tensor | None = None) -> torch.Tensor:
    """L2 norm of all gradients (one ``_foreach_norm``), plus an optional extra squared term."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch._foreach_norm(grads)
    sq = torch.stack(norms).square().sum()
    if extra_sq is not None:
        sq = sq + extra_sq
    return sq.sqrt()


def clip_scale(total_norm: torch.Tensor, max_norm: float) -> torch.Tensor:
    """``grad_scale`` for :meth:`FusedAdamW.step` reproducing ``clip_grad_norm_``:
    grads are multiplied by ``min(1, max_norm / (norm + 1e-6))``."""
    coef = torch.clamp(max_norm / (total_norm + 1e-6), max=1.0)
    return 1.0 / coef


def linear_warmup_decay(step: int, warmup: int, total: int) -> float:
    """Multiplier of ``transformers.get_linear_schedule_with_warmup`` at ``step`` (0-based)."""
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


# --------------------------------------------------------------------------- model

class FastBertLayer(nn.Module):
    def __init__(self, hidden, heads, inter, eps, p_hidden, p_attn, act):
        super().__init__()
        self.h, self.nh, self.hd = hidden, heads, hidden // heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.ln1 = nn.LayerNorm(hidden, eps=eps)
        self.inter = nn.Linear(hidden, inter)
        self.out = nn.Linear(inter, hidden)
        self.ln2 = nn.LayerNorm(hidden, eps=eps)
        self.p_hidden, self.p_attn, self.act = p_hidden, p_attn, act
        self.scale = 1.0 / math.sqrt(self.hd)

    def forward(self, x, add_mask):
        b, s, _ = x.shape
        tr = self.training
        # unbind (not qkv[0], qkv[1], ...): its backward is one stack, not 3 zero-fills + copies
        q, k, v = self.qkv(x).view(b, s, 3, self.nh, self.hd).permute(2, 0, 3, 1, 4).unbind(0)  # [B,H,S,D]
        scores = torch.matmul(q, k.transpose(-1, -2))
        if add_mask is not None:
            scores = torch.add(add_mask, scores, alpha=self.scale)
        else:
            scores = scores.mul(self.scale)
        probs = fast_dropout(torch.softmax(scores, dim=-1), self.p_attn, tr)
        ctx = torch.matmul(probs, v).transpose(1, 2).reshape(b, s, self.h)
        x = self.ln1(fast_dropout(self.attn_out(ctx), self.p_hidden, tr) + x)
        hmid = self.act(self.inter(x))
        return self.ln2(fast_dropout(self.out(hmid), self.p_hidden, tr) + x)


class FastBertForSequenceClassification(nn.Module):
    """Plain-PyTorch ``BertForSequenceClassification`` (absolute positions, token type 0).

    Same parameters and math as the HF model; differences are only in how it is
    computed: Q, K and V are one [3H, H] linear (exact for AdamW, which is
    element-wise; the global clip norm is unchanged), the attention mask is
    skipped for unpadded batches, dropout is :func:`fast_dropout`, and the word
    embedding is a :class:`SparseRowEmbedding`.  Build it with :meth:`from_hf`.
    """

    def __init__(self, cfg, num_labels):
        super().__init__()
        h = cfg.hidden_size
        self.cfg = cfg
        self.word = None  # SparseRowEmbedding, set by from_hf
        self.pos = nn.Parameter(torch.empty(cfg.max_position_embeddings, h))
        self.tok_type = nn.Parameter(torch.empty(cfg.type_vocab_size, h))
        self.emb_ln = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        act = {"gelu": F.gelu, "relu": F.relu}[cfg.hidden_act]
        self.layers = nn.ModuleList(
            FastBertLayer(h, cfg.num_attention_heads, cfg.intermediate_size, cfg.layer_norm_eps,
                          cfg.hidden_dropout_prob, cfg.attention_probs_dropout_prob, act)
            for _ in range(cfg.num_hidden_layers))
        self.pooler = nn.Linear(h, h)
        p_cls = getattr(cfg, "classifier_dropout", None)
        self.p_cls = cfg.hidden_dropout_prob if p_cls is None else p_cls
        self.p_hidden = cfg.hidden_dropout_prob
        self.classifier = nn.Linear(h, num_labels)

    @classmethod
    @torch.no_grad()
    def from_hf(cls, hf):
        cfg = hf.config
        m = cls(cfg, cfg.num_labels)
        sd = hf.state_dict()
        m.word = SparseRowEmbedding(sd["bert.embeddings.word_embeddings.weight"])
        m.pos.copy_(sd["bert.embeddings.position_embeddings.weight"])
        m.tok_type.copy_(sd["bert.embeddings.token_type_embeddings.weight"])
        m.emb_ln.weight.copy_(sd["bert.embeddings.LayerNorm.weight"])
        m.emb_ln.bias.copy_(sd["bert.embeddings.LayerNorm.bias"])
        for i, L in enumerate(m.layers):
            p = f"bert.encoder.layer.{i}."
            L.qkv.weight.copy_(torch.cat([sd[p + f"attention.self.{n}.weight"] for n in ("query", "key", "value")]))
            L.qkv.bias.copy_(torch.cat([sd[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")]))
            L.attn_out.weight.copy_(sd[p + "attention.output.dense.weight"])
            L.attn_out.bias.copy_(sd[p + "attention.output.dense.bias"])
            L.ln1.weight.copy_(sd[p + "attention.output.LayerNorm.weight"])
            L.ln1.bias.copy_(sd[p + "attention.output.LayerNorm.bias"])
            L.inter.weight.copy_(sd[p + "intermediate.dense.weight"])
            L.inter.bias.copy_(sd[p + "intermediate.dense.bias"])
            L.out.weight.copy_(sd[p + "output.dense.weight"])
            L.out.bias.copy_(sd[p + "output.dense.bias"])
            L.ln2.weight.copy_(sd[p + "output.LayerNorm.weight"])
            L.ln2.bias.copy_(sd[p + "output.LayerNorm.bias"])
        m.pooler.weight.copy_(sd["bert.pooler.dense.weight"])
        m.pooler.bias.copy_(sd["bert.pooler.dense.bias"])
        m.classifier.weight.copy_(sd["classifier.weight"])
        m.classifier.bias.copy_(sd["classifier.bias"])
        return m

    def dense_parameters(self):
        """All trainable parameters except the sparse word-embedding table."""
        return [p for n, p in self.named_parameters() if not n.startswith("word.")]

    def non_embedding_parameters(self) -> int:
        """Encoder parameters excluding word/position/token-type embeddings (pooler and head excluded too)."""
        return sum(p.numel() for n, p in self.named_parameters() if n.startswith(("layers.", "emb_ln.")))

    def forward(self, input_ids, attention_mask=None):
        b, s = input_ids.shape
        tr = self.training
        x = self.word(input_ids) + (self.pos[:s] + self.tok_type[0])
        x = fast_dropout(self.emb_ln(x), self.p_hidden, tr)
        add_mask = None
        if attention_mask is not None:
            add_mask = torch.zeros((b, 1, 1, s), dtype=x.dtype).masked_fill_(
                ~attention_mask[:, None, None, :], torch.finfo(x.dtype).min)
        for L in self.layers:
            x = L(x, add_mask)
        pooled = torch.tanh(self.pooler(x[:, 0]))
        return self.classifier(fast_dropout(pooled, self.p_cls, tr))


# --------------------------------------------------------------------------- loop

def train_fast(model, train_ids, train_labels, *, batch_size=8, num_steps=500, lr=2e-5,
               warmup_steps=50, max_grad_norm=1.0, seed=42, log_every=0):
    """The fast loop. Returns dict(train_seconds, examples, losses)."""
    lengths = [len(t) for t in train_ids]
    batches = length_bucketed_batches(lengths, batch_size, num_steps, seed)
    dense = model.dense_parameters()
    opt = FusedAdamW(dense, sparse=model.word, lr=lr, weight_decay=0.0)
    labels_t = torch.tensor(train_labels, dtype=torch.long)
    model.train()
    losses = []
    n_ex = 0
    t0 = time.perf_counter()
    for step, idx in enumerate(batches):
        ids, mask = collate([train_ids[i] for i in idx])
        y = labels_t[idx]
        logits = model(ids, mask)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        norm = global_grad_norm(dense, model.word.batch_grad_sq_norm())
        opt.step(lr * linear_warmup_decay(step, warmup_steps, num_steps),
                 grad_scale=clip_scale(norm, max_grad_norm) if max_grad_norm else None)
        opt.zero_grad()
        n_ex += len(idx)
        if log_every and (step % log_every == 0 or step == num_steps - 1):
            losses.append((step, float(loss)))
            print(f"step {step} loss {float(loss):.4f} {n_ex / (time.perf_counter() - t0):.1f} ex/s",
                  file=sys.stderr, flush=True)
    secs = time.perf_counter() - t0
    return {"train_seconds": secs, "examples": n_ex, "losses": losses}


@torch.inference_mode()
def evaluate(model, ids_list, labels, batch_size=16):
    """Accuracy; batches sorted by length, inference_mode, no dropout."""
    model.eval()
    order = sorted(range(len(ids_list)), key=lambda i: len(ids_list[i]))
    correct = 0
    for k in range(0, len(order), batch_size):
        idx = order[k:k + batch_size]
        ids, mask = collate([ids_list[i] for i in idx])
        pred = model(ids, mask).argmax(-1)
        correct += int((pred == torch.tensor([labels[i] for i in idx])).sum())
    model.train()
    return correct / len(ids_list)


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM), MB."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="folder holding train/test .csv.gz")
    ap.add_argument("--model", required=True)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--warmup-steps", type=int, default=50)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=0)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(a.model)
    tr_x, tr_y = load_ag_news(a.data, "train")
    te_x, te_y = load_ag_news(a.data, "test")
    tr_ids = pretokenize(tok, tr_x, a.max_length)
    te_ids = pretokenize(tok, te_x, a.max_length)
    torch.manual_seed(a.seed)  # same classifier-head init as the Trainer worker
    hf = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=4)
    model = FastBertForSequenceClassification.from_hf(hf)
    del hf
    import gc
    gc.collect()
    torch.manual_seed(a.seed)
    res = train_fast(model, tr_ids, tr_y, batch_size=a.batch_size, num_steps=a.steps, lr=a.lr,
                     warmup_steps=a.warmup_steps, seed=a.seed, log_every=a.log_every)
    acc = evaluate(model, te_ids, te_y)
    out = {
        "name": "fast_loop",
        "examples_per_s": res["examples"] / res["train_seconds"],
        "train_seconds": res["train_seconds"],
        "test_accuracy": acc,
        "peak_rss_mb": peak_rss_mb(),
        "threads": torch.get_num_threads(),
        "non_embedding_params": model.non_embedding_parameters(),
        "touched_embedding_rows": model.word.n_active,
        "mean_tokens_per_example": sum(len(t) for t in tr_ids) / len(tr_ids),
    }
    print("RESULT " + json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
