"""``nlpkit run --jobs N``: independent runs of a recipe's matrix side by side on one machine.

Each of the N worker processes gets its share of the CPU cores (``torch.set_num_threads``), or with GPUs
one GPU of its own (round robin when there are more workers than GPUs). Two processes never write one
run folder: each run holds its folder's lock (``runs.run_lock``), so a run that another nlpkit process is
working on is reported and left to it. Workers are spawned (not forked) processes: CUDA and thread
pools cannot be forked safely. SIGTERM to ``nlpkit run`` reaches the workers: each running run writes its
checkpoint and stops, and no queued run starts (Ctrl-C reaches them through the terminal's process group).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from nlpkit.checkpoint import Interrupted
from nlpkit.errors import NlpkitError
from nlpkit.hardware import worker_gpu
from nlpkit.recipe import RunSpec
from nlpkit.runs import RunLocked

_cache: dict = {}  # per worker: task data shared by the runs it executes
_stopping: Any = None  # per worker: set once nlpkit run was told to stop


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _start_worker(slots: Any, threads: int, gpus: int, stopping: Any) -> None:
    """Runs once in each worker, before anything touches CUDA."""
    global _stopping
    _stopping = stopping
    signal.signal(signal.SIGTERM, _interrupt)  # between runs; the training loop has its own (a checkpoint first)
    slot = slots.get()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = worker_gpu(slot) or ""  # from an inherited CUDA_VISIBLE_DEVICES
    import torch

    torch.set_num_threads(threads)


def _interrupt(signum: int, _frame: Any) -> None:
    raise Interrupted(f"Stopped by signal {signum} before training began", signum)


def _run_one(spec: RunSpec, restart: bool) -> dict[str, Any]:
    from nlpkit.engine import execute

    if _stopping is not None and _stopping.is_set():
        raise Interrupted("not started: nlpkit run was stopped", signal.SIGTERM)
    spec.train = spec.train.model_copy(update={"progress": False})  # N progress bars would garble the terminal
    return execute(spec, cache=_cache, restart=restart)


def run_parallel(todo: list[tuple[int, RunSpec]], n: int, jobs: int, restart: bool,
                 echo: Callable[[str], Any]) -> list[dict[str, Any]]:
    """Run ``todo`` ((position, spec) pairs) ``jobs`` at a time; raise after all ended if any failed."""
    import torch

    from nlpkit.engine import done_line

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise NlpkitError("--jobs runs separate runs side by side; it cannot be combined with torchrun/accelerate")
    gpus = torch.cuda.device_count()
    jobs = max(1, min(jobs, len(todo)))
    threads = max(1, cpu_cores() // jobs)
    share = f"one GPU each of {gpus}" if gpus else f"{threads} CPU thread{'s' * (threads > 1)} each"
    echo(f"Running {len(todo)} runs, {jobs} at a time ({share})")
    ctx = mp.get_context("spawn")
    slots = ctx.Queue()
    for slot in range(jobs):
        slots.put(slot)
    results, failed, stopped = [], [], []
    stopping = ctx.Event()
    pool = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_start_worker,
                               initargs=(slots, threads, gpus, stopping))

    def stop(signum: int, _frame: Any) -> None:
        stopped.append(signum)
        stopping.set()
        if signum == signal.SIGTERM:
            for process in list(getattr(pool, "_processes", {}).values()):
                if process.is_alive():
                    os.kill(process.pid, signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with pool:
            futures = {pool.submit(_run_one, spec, restart): (i, spec) for i, spec in todo}
            for future in as_completed(futures):
                i, spec = futures[future]
                try:
                    res = future.result()
                except RunLocked as err:
                    echo(f"[{i}/{n}] {spec.name}: skipped, {err}")
                    continue
                except Interrupted as err:
                    echo(f"[{i}/{n}] {spec.name}: {err}")
                    continue
                except Exception as err:  # one failed run does not stop the others
                    echo(f"[{i}/{n}] {spec.name}: failed: {type(err).__name__}: {err}")
                    failed.append((spec.name, err))
                    continue
                echo(done_line(i, n, spec, res))
                results.append(res)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopped:
        raise Interrupted(f"Stopped by signal {stopped[0]}: running runs wrote their checkpoints; run the same "
                          "command again to resume", stopped[0])
    if failed:
        names = ", ".join(name for name, _ in failed)
        raise NlpkitError(f"{len(failed)} of {len(todo)} runs failed: {names}") from failed[0][1]
    return results
