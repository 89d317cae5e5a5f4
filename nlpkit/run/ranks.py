"""Under DDP (torchrun, one or several nodes) the main process alone checks a run's folder before training (its
lock, settings that changed); what it finds must reach every rank at once. Otherwise a rank-0 error leaves the
other ranks waiting in the next collective, on another node for as long as the collective's timeout, while rank 0
goes on (a run it skips) or is gone."""

from __future__ import annotations

import os

import torch

from nlpkit.errors import NlpkitError
from nlpkit.run.folders import RunLocked


def distributed() -> bool:
    return (int(os.environ.get("WORLD_SIZE", "1")) > 1 and torch.distributed.is_available()
            and torch.distributed.is_initialized())


def agree_with_rank_zero(error: BaseException | None) -> None:
    """Raise ``error`` (what rank 0 found; None on the other ranks, or when all is well) on every rank: rank 0
    broadcasts it, and each other rank raises the same kind (:class:`RunLocked`, so every rank skips the same run)
    or an :class:`NlpkitError` saying what rank 0 found. Also a barrier. Without a process group, just raises."""
    if not distributed():
        if error is not None:
            raise error
        return
    from accelerate.utils import broadcast_object_list

    rank = int(os.environ.get("RANK", "0"))
    said = (type(error).__name__, str(error), isinstance(error, RunLocked)) if rank == 0 and error else None
    verdict = broadcast_object_list([said], from_process=0)[0]
    if rank == 0:
        if error is not None:
            raise error
        return
    if verdict is not None:
        kind, message, locked = verdict
        if locked:
            raise RunLocked(message)
        raise NlpkitError(f"rank 0 stopped before training: {kind}: {message}")


def leave_together() -> None:
    """The end of a recipe under DDP: every rank waits for the others, then the process group is taken down on
    all of them at once. Left to the interpreter's exit, gloo's teardown aborted a rank now and then ("terminate
    called without an active exception", seen with a rank that skipped its only run); a barrier alone did not
    prevent it."""
    if not distributed():
        return
    from accelerate.state import AcceleratorState

    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    AcceleratorState._reset_state(reset_partial_state=True)  # a later run in this process sets the group up again
