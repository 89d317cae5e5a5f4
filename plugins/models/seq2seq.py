"""Sequence-to-sequence models for the ``lstm`` and ``attention`` plugins (the ``bert`` one is in seq2seq_bert.py).

- ``lstm``: the encoder-decoder of Sutskever et al. (2014): a recurrent encoder reads the source reversed and
  the decoder starts from its final state; the whole sentence must fit in that one state, no attention.
- ``attention``: Bahdanau et al. (2015): a bidirectional GRU encoder and a GRU decoder that, before each step,
  scores every source state h_i with v^T tanh(W_s s_{t-1} + W_h h_i) and is fed the weighted context.

Written for CPUs (each choice measured on Multi30k): the bidirectional encoder is two one-direction GRUs, the
backward one reading each sentence reversed within its own length (a packed bidirectional ``nn.GRU`` had a
backward pass growing with the square of the length); decoder steps come from ``unbind`` (``x[:, t]`` had
the same problem); the output layer, tied to the target embeddings, runs once over all steps; and the
decoder's per-step weight gradients are summed in one matmul after the loop (``_StepMatmul``).

Decoding is batched greedy or beam search, stopping at end of sentence or at ``max_target_ratio`` x source
length + ``max_target_extra``. The width is told, never inferred: ``prepare_inference(final)`` (called by the
training loop before every prediction, by the engine for the test split and by ``nlpkit predict``) picks
``eval_beam_size`` for validation during training (greedy by default: cheap) and the recipe's ``beam_size`` for the
test split and ``nlpkit predict``. Loading weights never changes it, so the test split is decoded as the recipe
says whether or not the best checkpoint had to be restored.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from safetensors.torch import load_model, save_model
from tokenizers import Tokenizer
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nlpkit.contract import Model, Options, Output, TaskSpec
from nlpkit.data.tokenizers import BOS, EOS, PAD, train_reversible_tokenizer

ReversibleTokenizer = Literal["bpe", "wordpiece", "unigram"]  # what train_reversible_tokenizer can detokenize


class DecoderFields(Options):
    """Decoder training and decoding options of every seq2seq model (``lstm``, ``attention``, ``bert``)."""

    teacher_forcing: float = Field(1.0, ge=0, le=1, description="Probability of feeding the gold previous token "
                                   "to the decoder in training (else its own guess).")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="Label smoothing of the training loss.")
    beam_size: int = Field(5, ge=1, description="Beam width for the test split and `nlpkit predict` (1 = greedy).")
    length_penalty: float = Field(1.0, description="Beam hypotheses are ranked by log p / length ** length_penalty.")
    eval_beam_size: int = Field(1, ge=1, description="Beam width for validation during training (1 = greedy, cheap).")
    max_target_ratio: float = Field(1.5, gt=0, description="Decode at most ratio x source tokens + max_target_extra.")
    max_target_extra: int = Field(10, ge=0, description="Decode at most max_target_ratio x source tokens + this.")
    decoder_hidden_size: int | None = Field(None, ge=1, description="The decoder's state size; default: hidden_size.")
    defer_weight_grads: bool = Field(True, description="One matmul for the decoder's weight gradients after the "
                                     "loop instead of one per step (exact; faster on CPU).")


class TargetVocabField(Options):
    target_vocab_size: int | None = Field(None, ge=1, description="Target subword vocabulary size; "
                                          "default: vocab_size.")


class CellField(Options):
    cell: Literal["lstm", "gru"] | None = Field(None, description="The plain encoder-decoder's recurrent cell; "
                                                "default: lstm.")


class Seq2SeqFields(CellField, TargetVocabField, DecoderFields):
    """Every seq2seq option the recurrent plugins' full options class holds (vocab_size, tokenizer, embedding_dim,
    hidden_size, layers, dropout, max_length and lowercase keep their meaning; lowercase applies to the source).
    Which of them a recipe may set for a task kind is told by the plugin's ``options_for``."""


def is_seq2seq_folder(folder: Path) -> bool:
    """Whether a saved model folder holds a seq2seq model (the plugins' ``load`` dispatches on it)."""
    return json.loads((Path(folder) / "config.json").read_text())["spec"]["kind"] == "seq2seq"


# --- decoder weight gradients in one matmul --------------------------------------------------------------


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


# --- encoders ---------------------------------------------------------------------------------------------


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first ``length`` steps (batch, time, ...); padding stays at the end."""
    t = torch.arange(x.shape[1], device=x.device)[None, :]
    lens = lengths.to(x.device)[:, None]
    index = torch.where(t < lens, lens - 1 - t, t)
    return x.gather(1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x))


def run_packed(rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """Run a (batch-first) RNN over padded rows without letting padding into the states: the padded outputs and
    the final state (a tensor, or the LSTM's pair), both in the batch's order.

    The rows are sorted by length here, on the lengths the loop keeps on the CPU (``host_inputs``), and reordered
    on the device with indices sent there without waiting: what ``pack_padded_sequence(enforce_sorted=False)``
    does, the same sort and the same results, but without its copy of the order back from the GPU (a host sync)."""
    lengths = torch.as_tensor(lengths, device="cpu")
    sorted_lengths, order = torch.sort(lengths, descending=True)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))
    order, inverse = order.to(x.device, non_blocking=True), inverse.to(x.device, non_blocking=True)
    packed = pack_padded_sequence(x.index_select(0, order), sorted_lengths, batch_first=True, enforce_sorted=True)
    out, state = rnn(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    state = tuple(s.index_select(1, inverse) for s in state) if isinstance(state, tuple) else \
        state.index_select(1, inverse)
    return out.index_select(0, inverse), state


class BiGRUEncoder(nn.Module):
    """Two one-direction GRUs; the backward one reads each sentence reversed within its length."""

    def __init__(self, vocab: int, emb: int, hidden: int, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab, emb, padding_idx=PAD)
        nn.init.normal_(self.embed.weight, std=0.1)
        self.fwd = nn.GRU(emb, hidden, batch_first=True)
        self.bwd = nn.GRU(emb, hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.output_size = 2 * hidden

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """States (batch, time, 2*hidden) and [last forward state; last backward state] (batch, 2*hidden)."""
        x = self.dropout(self.embed(ids))
        out_f, h_f = run_packed(self.fwd, x, lengths)
        out_b, h_b = run_packed(self.bwd, reverse_within_length(x, lengths), lengths)
        states = torch.cat([out_f, reverse_within_length(out_b, lengths)], dim=-1)
        return self.dropout(states), torch.cat([h_f[-1], h_b[-1]], dim=-1)


# --- decoders ---------------------------------------------------------------------------------------------


class TiedOutput(nn.Module):
    """Decoder features -> embedding size -> logits through the (tied) target embedding matrix."""

    def __init__(self, features: int, embed: nn.Embedding, dropout: float):
        super().__init__()
        self.proj = nn.Linear(features, embed.embedding_dim)
        self.embed = embed
        self.bias = nn.Parameter(torch.zeros(embed.num_embeddings))
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(self.dropout(self.proj(features)), self.embed.weight, self.bias)


class BahdanauDecoder(nn.Module):
    """GRU decoder with additive attention; state dicts hold tensors whose first dim is the batch (beams)."""

    def __init__(self, vocab: int, emb: int, enc: int, hidden: int, attention: int, dropout: float,
                 defer: bool = True):
        super().__init__()
        self.embed = nn.Embedding(vocab, emb, padding_idx=PAD)
        nn.init.normal_(self.embed.weight, std=0.1)
        self.bridge = nn.Linear(enc, hidden)  # s_0 = tanh(W summary)
        self.keys = nn.Linear(enc, attention, bias=False)  # W_h h_i, once per sentence
        self.query = nn.Linear(hidden, attention, bias=False)  # W_s s_{t-1}
        self.v = nn.Linear(attention, 1, bias=False)
        self.cell = nn.GRUCell(emb + enc, hidden)  # input [embedding; context]
        self.out = TiedOutput(hidden + enc + emb, self.embed, dropout)
        self.dropout = nn.Dropout(dropout)
        self.emb, self.defer = emb, defer

    def start(self, states: torch.Tensor, mask: torch.Tensor, summary: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"states": states, "keys": self.keys(states), "mask": mask, "h": torch.tanh(self.bridge(summary))}

    def attend(self, q: torch.Tensor, state: dict) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.v(torch.tanh(state["keys"] + q[:, None, :])).squeeze(-1)
        weights = scores.masked_fill(~state["mask"], float("-inf")).softmax(-1)
        return torch.bmm(weights[:, None, :], state["states"]).squeeze(1), weights

    def _gru(self, gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """torch.nn.GRUCell from its two pre-activations (so their matmuls can be done our way)."""
        ir, iz, in_ = gi.chunk(3, -1)
        hr, hz, hn = gh.chunk(3, -1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)
        return torch.lerp(n, h.to(n.dtype), z.to(n.dtype))  # (1 - z) * n + z * h; one dtype under autocast

    def forward(self, state: dict, target_in: torch.Tensor, teacher_forcing: float = 1.0):
        """Teacher-forced logits (batch, steps, vocab) and attention (batch, steps, source)."""
        hidden = self.cell.hidden_size
        w_ie, w_ic = self.cell.weight_ih.split([self.emb, self.cell.input_size - self.emb], dim=1)
        w_hq = torch.cat([self.cell.weight_hh, self.query.weight])  # s_{t-1} feeds the GRU and the query
        b_hq = torch.cat([self.cell.bias_hh, self.cell.bias_hh.new_zeros(self.query.out_features)])
        emb = self.dropout(self.embed(target_in))
        gi_emb = F.linear(emb, w_ie, self.cell.bias_ih)  # the embedding part of every step at once
        defer = (self.defer and torch.is_grad_enabled() and self.training and teacher_forcing >= 1.0
                 and not torch.is_autocast_enabled(emb.device.type))  # the deferred matmuls are fp32-only
        h = state["h"]
        if defer:
            steps_c, steps_h = _Steps(), _Steps()
            h = _WeightGrads.apply(h, [steps_c, steps_h], w_ic, w_hq)

            def mm_c(x):
                return _StepMatmul.apply(x, w_ic, steps_c)

            def mm_h(x):
                return _StepMatmul.apply(x, w_hq, steps_h)
        else:
            def mm_c(x):
                return x @ w_ic.t()

            def mm_h(x):
                return x @ w_hq.t()
        hs, contexts, weights, embs = [], [], [], []
        prev_logits = None
        for t, gi_t in enumerate(gi_emb.unbind(1)):
            e_t = emb[:, t]
            if teacher_forcing < 1.0 and t > 0 and random.random() >= teacher_forcing:
                e_t = self.dropout(self.embed(prev_logits.argmax(-1)))  # the model's own previous guess
                gi_t = F.linear(e_t, w_ie, self.cell.bias_ih)
            ghq = mm_h(h) + b_hq
            context, a = self.attend(ghq[:, 3 * hidden:], state)
            h = self._gru(gi_t + mm_c(context), ghq[:, : 3 * hidden], h)
            hs.append(h), contexts.append(context), weights.append(a), embs.append(e_t)
            if teacher_forcing < 1.0:
                prev_logits = self.out(torch.cat([h, context, e_t], -1))
        features = torch.cat([torch.stack(hs, 1), torch.stack(contexts, 1), torch.stack(embs, 1)], -1)
        return self.out(features), torch.stack(weights, 1)

    def step(self, prev: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """One decoding step: log-probabilities of the next token, the new state, the attention weights."""
        e = self.embed(prev)
        context, a = self.attend(self.query(state["h"]), state)
        h = self.cell(torch.cat([e, context], -1), state["h"])
        logits = self.out(torch.cat([h, context, e], -1))
        return logits.float().log_softmax(-1), {**state, "h": h}, a


class PlainDecoder(nn.Module):
    """Sutskever et al.: an LSTM/GRU that starts from the encoder's final state; no attention."""

    def __init__(self, vocab: int, emb: int, hidden: int, layers: int, cell: str, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab, emb, padding_idx=PAD)
        nn.init.normal_(self.embed.weight, std=0.1)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(emb, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.out = TiedOutput(hidden, self.embed, dropout)
        self.dropout = nn.Dropout(dropout)
        self.lstm = cell == "lstm"

    def start(self, final) -> dict[str, torch.Tensor]:
        """Encoder final state(s) (layers, batch, hidden) -> batch-first state tensors."""
        if self.lstm:
            return {"h": final[0].transpose(0, 1), "c": final[1].transpose(0, 1)}
        return {"h": final.transpose(0, 1)}

    def _hx(self, state: dict):
        h = state["h"].transpose(0, 1).contiguous()
        return (h, state["c"].transpose(0, 1).contiguous()) if self.lstm else h

    def forward(self, state: dict, target_in: torch.Tensor, teacher_forcing: float = 1.0):
        if teacher_forcing >= 1.0:  # every step's input is known: one call runs them all
            out, _ = self.rnn(self.dropout(self.embed(target_in)), self._hx(state))
            return self.out(out), None
        logits, prev = [], target_in[:, 0]
        for t in range(target_in.shape[1]):
            if t > 0:
                prev = target_in[:, t] if random.random() < teacher_forcing else logits[-1].argmax(-1)
            out, hx = self.rnn(self.dropout(self.embed(prev))[:, None], self._hx(state))
            state = self.start(hx)
            logits.append(self.out(out[:, 0]))
        return torch.stack(logits, 1), None

    def step(self, prev: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict, None]:
        out, hx = self.rnn(self.embed(prev)[:, None], self._hx(state))
        return self.out(out[:, 0]).float().log_softmax(-1), self.start(hx), None


# --- decoding ---------------------------------------------------------------------------------------------


def _mask_scores(logp: torch.Tensor, finished: torch.Tensor, at_limit: torch.Tensor) -> torch.Tensor:
    """Never PAD/BOS while alive; finished rows only continue with PAD at no cost; rows at the length limit
    must end now."""
    logp = logp.clone()
    logp[:, PAD] = float("-inf")
    logp[:, BOS] = float("-inf")
    eos = logp[:, EOS].clone()
    logp[at_limit] = float("-inf")
    logp[at_limit, EOS] = eos[at_limit]
    logp[finished] = float("-inf")
    logp[finished, PAD] = 0.0
    return logp


def _stop_check_every(device: torch.device) -> int:
    """Decoding steps between checks that every row has finished. The check reads a flag back to the host, which
    on a GPU waits for every queued step: there look every 8 steps (finished rows only add PAD, at no score, so the
    result is the same); on the CPU, where reading costs nothing, every step."""
    return 1 if device.type == "cpu" else 8


def greedy_search(step, state: dict, max_len: torch.Tensor) -> tuple[list[list[int]], list]:
    """Batched greedy decoding; returns token ids (without EOS) and per-step attention rows (or None)."""
    n = max_len.shape[0]
    prev = torch.full((n,), BOS, dtype=torch.long, device=max_len.device)
    finished = torch.zeros(n, dtype=torch.bool, device=max_len.device)
    tokens, attention = [], []
    every = _stop_check_every(max_len.device)
    for t in range(int(max_len.max())):
        logp, state, a = step(prev, state)
        prev = _mask_scores(logp, finished, t + 1 >= max_len).argmax(-1)
        tokens.append(prev)
        attention.append(a)
        finished = finished | (prev == EOS)
        if (t + 1) % every == 0 and finished.all():
            break
    return _finish(torch.stack(tokens, 1), attention)


def beam_search(step, state: dict, max_len: torch.Tensor, beam: int, length_penalty: float = 1.0):
    """Batched beam search. Finished hypotheses keep their beam (extended by PAD at no cost) and compete at
    the end by log p / length ** length_penalty."""
    n, device = max_len.shape[0], max_len.device
    state = {k: v.repeat_interleave(beam, 0) for k, v in state.items()}
    limit = max_len.repeat_interleave(beam)
    scores = torch.full((n, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: keep one
    prev = torch.full((n * beam,), BOS, dtype=torch.long, device=device)
    finished = torch.zeros(n * beam, dtype=torch.bool, device=device)
    lengths = torch.zeros(n * beam, device=device)
    history = torch.zeros(n * beam, 0, dtype=torch.long, device=device)
    attention: list[torch.Tensor] = []
    every = _stop_check_every(device)
    for t in range(int(max_len.max())):
        logp, state, a = step(prev, state)
        logp = _mask_scores(logp, finished, t + 1 >= limit)
        vocab = logp.shape[-1]
        top, index = (scores.view(-1, 1) + logp).view(n, beam * vocab).topk(beam, dim=-1)
        source = (torch.arange(n, device=device)[:, None] * beam + index // vocab).view(-1)
        prev = (index % vocab).view(-1)
        state = {k: v.index_select(0, source) for k, v in state.items()}
        lengths = lengths[source] + (~finished[source]).float()
        finished = finished[source] | (prev == EOS)
        history = torch.cat([history[source], prev[:, None]], 1)
        if a is not None:  # each beam's attention history follows it
            attention = [x.index_select(0, source) for x in attention] + [a.index_select(0, source)]
        scores = top
        if (t + 1) % every == 0 and finished.all():
            break
    ranked = scores.view(-1) / lengths.clamp(min=1) ** length_penalty
    best = torch.arange(n, device=device) * beam + ranked.view(n, beam).argmax(-1)
    return _finish(history[best], [x[best] for x in attention] if attention else [None])


def _finish(tokens: torch.Tensor, attention: list) -> tuple[list[list[int]], list]:
    """Cut each row at its EOS; attention rows cut the same way (EOS step included)."""
    ids, attn = [], []
    stacked = torch.stack(attention, 1) if attention and attention[0] is not None else None
    for i, row in enumerate(tokens.tolist()):
        end = row.index(EOS) if EOS in row else len(row)
        ids.append(row[:end])
        attn.append(stacked[i, : end + 1] if stacked is not None else None)
    return ids, attn


# --- the models -------------------------------------------------------------------------------------------


class Seq2SeqModel(Model):
    """What every seq2seq model shares: subword vocabularies fitted on the training split, features,
    the loss, decoding and persistence. Subclasses build the network and ``encode_source``."""

    serves = ("seq2seq",)
    prefers_fp32_on_cpu = True  # step-by-step decoders: bf16 autocast is slower on CPUs without native bf16
    default_cell = "gru"
    host_inputs = ("source_lengths",)  # packing reads them on the CPU

    def __init__(self, spec: TaskSpec, options: Options, source_tokenizer: Any, target_tokenizer: Tokenizer,
                 **parts: Any):
        super().__init__(spec, options)
        self.source_tokenizer, self.target_tokenizer = source_tokenizer, target_tokenizer
        self.target_vocab = target_tokenizer.get_vocab_size()
        self.decode_beam = self.options.eval_beam_size  # until told otherwise by prepare_inference
        self.build(**parts)

    def build(self, **parts: Any) -> None:
        """Create the network (``parts``: prebuilt modules such as a pretrained encoder)."""
        raise NotImplementedError

    @classmethod
    def fit_source_tokenizer(cls, options: Options, train: list[dict]) -> Any:
        return train_reversible_tokenizer((ex["source"] for ex in train), options.vocab_size, options.tokenizer,
                                          options.lowercase)

    @classmethod
    def create(cls, spec: TaskSpec, options: Options, train: list[dict]) -> Seq2SeqModel:
        """Source and target vocabularies from the training split only; the target keeps its case."""
        target = train_reversible_tokenizer((ex["target"] for ex in train),
                                            options.target_vocab_size or options.vocab_size, options.tokenizer)
        return cls(spec, options, cls.fit_source_tokenizer(options, train), target)

    # --- persistence ---------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        config = {"plugin": self.name, "spec": self.spec.to_dict(), "options": self.options.model_dump()}
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        self.save_source_tokenizer(folder)
        self.target_tokenizer.save(str(folder / "target_tokenizer.json"))
        save_model(self, str(folder / "model.safetensors"))

    def save_source_tokenizer(self, folder: Path) -> None:
        self.source_tokenizer.save(str(folder / "source_tokenizer.json"))

    @classmethod
    def load_source_tokenizer(cls, folder: Path) -> Any:
        return Tokenizer.from_file(str(folder / "source_tokenizer.json"))

    @classmethod
    def load(cls, folder: Path, options_cls: type[Options] = Options) -> Seq2SeqModel:
        """``options_cls``: the plugin's options class (the plugin's ``load`` passes it)."""
        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        model = cls(TaskSpec(**config["spec"]), options_cls(**config["options"]), cls.load_source_tokenizer(folder),
                    Tokenizer.from_file(str(folder / "target_tokenizer.json")))
        load_model(model, str(folder / "model.safetensors"))
        return model

    def prepare_inference(self, final: bool) -> None:
        """Beam width for the predictions that follow: the recipe's ``beam_size`` for the test split and
        ``nlpkit predict`` (final), ``eval_beam_size`` for validation during training."""
        self.decode_beam = self.options.beam_size if final else self.options.eval_beam_size

    # --- data ----------------------------------------------------------------------------------------
    def source_ids(self, text: str) -> tuple[list[int], list[str]]:
        enc = self.source_tokenizer.encode(text)
        n = self.options.max_length
        return (enc.ids[:n] or [EOS]), (enc.tokens[:n] or ["[EOS]"])

    def encode(self, example: dict) -> dict[str, Any]:
        ids, tokens = self.source_ids(example["source"])
        features = {"source": ids, "source_tokens": tokens, "length": len(ids)}
        if example.get("target"):
            target = self.target_tokenizer.encode(example["target"]).ids[: self.options.max_length] + [EOS]
            features |= {"target": target, "length": max(len(ids), len(target)), "n_tokens": len(target)}
        return features

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        def pad(rows: list[list[int]]) -> torch.Tensor:
            out = torch.full((len(rows), max(map(len, rows))), PAD, dtype=torch.long)
            for i, r in enumerate(rows):
                out[i, : len(r)] = torch.tensor(r)
            return out

        batch = {"source": pad([f["source"] for f in features]),
                 "source_lengths": torch.tensor([len(f["source"]) for f in features]),
                 "source_tokens": [f["source_tokens"] for f in features]}
        if all("target" in f for f in features):
            batch["target_in"] = pad([[BOS] + f["target"][:-1] for f in features])
            batch["target_out"] = pad([f["target"] for f in features])
        return batch

    # --- computation ---------------------------------------------------------------------------------
    def encode_source(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The decoder's start state for a batch (tensors with the batch as first dimension)."""
        raise NotImplementedError

    def forward(self, source: torch.Tensor, source_lengths: torch.Tensor, target_in: torch.Tensor | None = None,
                target_out: torch.Tensor | None = None, **extra: Any) -> Output:
        state = self.encode_source({"source": source, "source_lengths": source_lengths, **extra})
        ratio = self.options.teacher_forcing if self.training else 1.0
        logits, attention = self.decoder(state, target_in, ratio)
        loss = F.cross_entropy(logits.float().flatten(0, 1), target_out.flatten(), ignore_index=PAD,
                               label_smoothing=self.options.label_smoothing if self.training else 0.0)
        return Output(loss=loss, logits=logits, attentions=attention)

    @torch.no_grad()
    def generate(self, batch: dict[str, Any], beam: int) -> tuple[list[list[int]], list]:
        state = self.encode_source(batch)
        lengths = batch["source_lengths"].to(batch["source"].device)
        max_len = (lengths * self.options.max_target_ratio + self.options.max_target_extra).long()
        if beam <= 1:
            return greedy_search(self.decoder.step, state, max_len)
        return beam_search(self.decoder.step, state, max_len, beam, self.options.length_penalty)

    @torch.no_grad()
    def predict(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        ids, attention = self.generate(batch, self.decode_beam)
        texts = self.target_tokenizer.decode_batch(ids)
        out = []
        for row, text, a, src_tokens in zip(ids, texts, attention, batch["source_tokens"]):
            pred: dict[str, Any] = {"prediction": text}
            if a is not None:
                pred["attention"] = [[round(w, 3) for w in r[: len(src_tokens)]] for r in a.float().tolist()]
                pred["source_tokens"] = src_tokens
                pred["target_tokens"] = [self.target_tokenizer.id_to_token(i) for i in row] + ["[EOS]"]
            out.append(pred)
        return out


class PlainSeq2Seq(Seq2SeqModel):
    """``lstm`` for seq2seq: Sutskever et al. (2014), source read reversed, no attention."""

    name = "lstm"
    default_cell = "lstm"

    def build(self) -> None:
        o = self.options
        cell = o.cell or self.default_cell
        hidden = o.decoder_hidden_size or o.hidden_size
        self.src_embed = nn.Embedding(self.source_tokenizer.get_vocab_size(), o.embedding_dim, padding_idx=PAD)
        nn.init.normal_(self.src_embed.weight, std=0.1)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.encoder = rnn(o.embedding_dim, hidden, o.layers, batch_first=True,
                           dropout=o.dropout if o.layers > 1 else 0.0)
        self.dropout = nn.Dropout(o.dropout)
        self.decoder = PlainDecoder(self.target_vocab, o.embedding_dim, hidden, o.layers, cell, o.dropout)

    def encode_source(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        lengths = batch["source_lengths"]
        x = self.dropout(self.src_embed(reverse_within_length(batch["source"], lengths)))
        _, final = run_packed(self.encoder, x, lengths)
        return self.decoder.start(final)


class AttentionSeq2Seq(Seq2SeqModel):
    """``attention`` for seq2seq: Bahdanau et al. (2015)."""

    name = "attention"

    def build(self) -> None:
        o = self.options
        self.encoder = BiGRUEncoder(self.source_tokenizer.get_vocab_size(), o.embedding_dim, o.hidden_size,
                                    o.dropout)
        self.decoder = BahdanauDecoder(self.target_vocab, o.embedding_dim, self.encoder.output_size,
                                       o.decoder_hidden_size or o.hidden_size, o.attention_size, o.dropout,
                                       o.defer_weight_grads)

    def encode_source(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        ids, lengths = batch["source"], batch["source_lengths"]
        states, final = self.encoder(ids, lengths)
        mask = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths.to(ids.device)[:, None]
        return self.decoder.start(states, mask, final)

