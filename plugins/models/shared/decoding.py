"""Batched decoding for the seq2seq models: :func:`greedy_search` and :func:`beam_search`.

Both take ``step(prev, state) -> (log-probabilities, state, attention or None)`` (a decoder's ``step``), the
decoder's start state (tensors with the batch as first dimension) and each row's length limit, and stop at end of
sentence or at that limit.
"""

from __future__ import annotations

import torch

from nlpkit.data.tokenizers import BOS, EOS, PAD


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
