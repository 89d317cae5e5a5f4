"""Length-bucketed batches: examples of similar length share a batch, so little compute goes to padding.

Batches are made from all examples sorted by length (ties broken at random), then served in a random
order. ``max_tokens`` caps padded tokens per batch instead of a fixed count, so short sentences come in
big batches and long ones in small ones. The same seed and epoch always give the same batches, which
is what makes a resumed run repeat the uninterrupted one.
"""

from __future__ import annotations

import random


def length_batches(
    lengths: list[int],
    batch_size: int,
    max_tokens: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
) -> list[list[int]]:
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    if shuffle:
        rng.shuffle(order)  # random tie-break; the stable sort keeps it within equal lengths
    order.sort(key=lambda i: lengths[i])
    batches: list[list[int]] = []
    batch: list[int] = []
    longest = 0
    for i in order:
        longest_if_added = max(longest, lengths[i])
        too_many = len(batch) >= batch_size if max_tokens is None else longest_if_added * (len(batch) + 1) > max_tokens
        if batch and too_many:
            batches.append(batch)
            batch, longest_if_added = [], lengths[i]
        batch.append(i)
        longest = longest_if_added
    if batch:
        batches.append(batch)
    if shuffle:
        rng.shuffle(batches)
    return batches


def shard(batches: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """This process's share of the batches. Every process gets the same number (the last few are dropped
    in training so that no process waits on a gradient all-reduce that never comes)."""
    usable = len(batches) - len(batches) % world if world > 1 else len(batches)
    return batches[rank:usable:world]
