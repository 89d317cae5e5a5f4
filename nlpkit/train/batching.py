"""Length-bucketed batches: examples of similar length share a batch, so little compute goes to padding.

Batches are made from all examples sorted by length (ties broken at random), then served in a random
order. ``max_tokens`` caps padded tokens per batch instead of a fixed count, so short sentences come in
big batches and long ones in small ones. The same seed and epoch always give the same batches, which
is what makes a resumed run repeat the uninterrupted one, and lets every DDP process build the
same global batches without talking to the others.
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


def shard(batch: list[int], rank: int, world: int) -> list[int]:
    """This process's part of one global batch under DDP: every ``world``-th example from position ``rank``.

    Every process builds the same global batches a 1-process run builds and takes its part of each, so
    1 process and N see the same examples in the same steps. A batch is sorted by length, so the parts
    have nearly equal lengths; they may differ in size by one (and be empty when the batch has fewer
    examples than processes): the training loop weights each process's loss by its share of the batch."""
    return batch[rank::world]
