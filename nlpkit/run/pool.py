"""Every run of a recipe in a fresh process of its own; ``nlpkit run --jobs N`` runs N of them at a time.

Why a process per run (also with the default ``--jobs 1``): whatever one run leaves in its process (accelerate's
device and precision state, RNG streams, the allocator's cached blocks, leaked memory, the kernel's high-water
mark of resident memory) would otherwise reach the next run and change its numbers or its peak memory, and a
run that dies hard (segfault, ``os._exit``, the OOM killer) would take the rest of the recipe with it.

The scheduler keeps up to N ``multiprocessing`` spawn children (not forked: CUDA and thread pools cannot be
forked safely), one per run; each sends its outcome back through a pipe and exits. A child that ends without
sending one died: its run is marked failed ("process died with signal/exit code N", in ``failure.json``) and
the others go on. With N > 1 each child gets its share of the CPU cores (``torch.set_num_threads``), or one
GPU of its own (round robin over the GPUs); with N = 1 the one child keeps the progress bar and the thread
count of ``nlpkit run``. Two processes never write one run folder: each run holds its folder's lock
(``runs.run_lock``), so a run that another nlpkit process is working on is reported and left to it.

SIGTERM to ``nlpkit run`` reaches the running children: each writes its checkpoint and stops, and no queued
run starts (Ctrl-C reaches the children through the terminal's process group).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from nlpkit.config.recipe import RunSpec
from nlpkit.errors import NlpkitError
from nlpkit.run.folders import RunLocked, run_lock
from nlpkit.track.host import TrackingHost, hosted_by
from nlpkit.train.checkpoint import Interrupted
from nlpkit.train.hardware import worker_gpu

# Callables every run's child calls before its run starts (pickled by reference, so importable by name in the
# child). Tests use it to inject faults into the child (a signal at a given step); a plugin could set up
# logging. Left empty by nlpkit itself.
CHILD_SETUP: list[Callable[[], Any]] = []


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def child_gpu(slot: int, jobs: int) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` of the child in ``slot``: with ``jobs`` > 1 and GPUs, one GPU each (of an
    inherited ``CUDA_VISIBLE_DEVICES`` when set, see :func:`nlpkit.train.hardware.worker_gpu`); else inherited as is."""
    import torch

    return worker_gpu(slot) if jobs > 1 and torch.cuda.device_count() else None


def _interrupt(signum: int, _frame: Any) -> None:
    raise Interrupted(f"Stopped by signal {signum} before training began", signum)


def _child(conn: Connection, spec: RunSpec, restart: bool, threads: int | None, gpu: str | None,
           setup: list[Callable[[], Any]]) -> None:
    """The body of one run's process: set it up, run, send ("finished", results) | ("failed", text) |
    ("interrupted", text, signum) | ("locked", text) back, and exit. Before that, the same pipe carries the run's
    tracker calls to the parent, which hosts its trackers (nlpkit.track.host)."""
    for sig in (signal.SIGTERM, signal.SIGINT):  # until the training loop installs its own (a checkpoint first)
        signal.signal(sig, _interrupt)
    try:
        if gpu is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # from an inherited CUDA_VISIBLE_DEVICES
        import torch

        if threads:
            torch.set_num_threads(threads)
        for fn in setup:
            fn()
        hosted_by(conn)
        from nlpkit.run.engine import execute

        message: tuple = ("finished", execute(spec, restart=restart, own_process=True))
    except RunLocked as err:
        message = ("locked", str(err))
    except Interrupted as err:
        message = ("interrupted", str(err), err.signum)
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which names the run
        message = ("failed", f"{type(err).__name__}: {err}")
    conn.send(message)
    conn.close()


@dataclass
class _Running:
    process: Any
    conn: Connection
    position: int
    spec: RunSpec
    slot: int
    message: tuple | None = None
    heard: bool = False  # its pipe gave its outcome, or EOF (tracker calls come before and go to the host)

    def hear(self, host: TrackingHost) -> None:
        """Take one message off the child's pipe: a tracker call for ``host``, or the child's outcome."""
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            self.heard = True
            return
        if not host.receive(self.conn, message):
            self.heard, self.message = True, message


@dataclass
class _State:
    stopped: list[int] = field(default_factory=list)
    running: dict[int, _Running] = field(default_factory=dict)  # by process sentinel


def died(exitcode: int | None) -> str:
    """What a child's exit code says about how it ended without reporting."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "?"
        return f"process died with signal {-exitcode} ({name})"
    return f"process died with exit code {exitcode}"


def run_isolated(todo: list[tuple[int, RunSpec]], n: int, jobs: int, restart: bool,
                 echo: Callable[[str], Any], more: Callable[[], list[tuple[int, RunSpec]]] | None = None,
                 done: Callable[[RunSpec, tuple], Any] | None = None) -> Any:
    """Run ``todo`` ((position, spec) pairs), each in a spawned child, ``jobs`` at a time; returns
    :class:`nlpkit.run.engine.Outcome` (finished results, failed runs, the signal that stopped the recipe).

    For work decided as it goes (a sweep asks its study for the next trial when a slot frees): ``more()`` is asked
    for further runs whenever a slot is free and ``todo`` is used up (an empty list: no more), and
    ``done(spec, message)`` hears each run's outcome as its child ends (sweeps, the ``local`` launcher; message:
    ("finished", results) | ("failed", text) | ("interrupted", text, signum) | ("locked", text))."""
    import torch

    from nlpkit.run.engine import Outcome, done_line, first_line
    from nlpkit.run.folders import write_failure

    outcome = Outcome()
    if not todo and more is None:
        return outcome
    gpus = torch.cuda.device_count()
    jobs = max(1, min(jobs, len(todo) if more is None else n))
    threads = max(1, cpu_cores() // jobs) if jobs > 1 else torch.get_num_threads()
    if jobs > 1:
        share = f"one GPU each of {gpus}" if gpus else f"{threads} CPU thread{'s' * (threads > 1)} each"
        echo(f"Running {len(todo) if more is None else n} runs, {jobs} at a time ({share})")
    ctx = mp.get_context("spawn")
    state = _State()
    host = TrackingHost()
    queue = list(todo)
    free_slots = list(range(jobs))

    def stop(signum: int, _frame: Any) -> None:
        state.stopped.append(signum)
        if signum == signal.SIGTERM:
            for run in list(state.running.values()):
                if run.process.is_alive():
                    os.kill(run.process.pid, signum)

    def start(position: int, spec: RunSpec) -> None:
        if jobs > 1:
            spec.train = spec.train.model_copy(update={"progress": False})  # N bars would garble the terminal
        step = None if restart else _latest_step(spec)
        echo(f"[{position}/{n}] {spec.name}: " + (f"resuming from the checkpoint at step {step} (--restart starts "
                                                  "over)" if step else "training"))
        slot = free_slots.pop(0)
        ours, theirs = ctx.Pipe()
        process = ctx.Process(target=_child, name=f"nlpkit {spec.name}",
                              args=(theirs, spec, restart, spec.train.threads or threads,
                                    child_gpu(slot, jobs), list(CHILD_SETUP)))
        process.start()
        theirs.close()  # the child holds the other end: when it dies, receiving says so (EOF)
        state.running[process.sentinel] = _Running(process, ours, position, spec, slot)

    def finish(run: _Running) -> None:
        run.process.join()
        host.gone(run.conn)  # trackers it left open (a hard death) are ended for it
        free_slots.append(run.slot)
        i, spec, message = run.position, run.spec, run.message
        if message is None:  # it ended without a word: killed, segfault, os._exit
            error = died(run.process.exitcode)
            try:
                with run_lock(spec.folder):  # if another process holds the folder by now, its outcome is its own
                    write_failure(spec.folder, error, "ProcessDied")
            except RunLocked:
                pass
            message = ("failed", error)
        kind = message[0]
        if kind == "finished":
            echo(done_line(i, n, spec, message[1]))
            outcome.results.append(message[1])
        elif kind == "locked":
            echo(f"[{i}/{n}] {spec.name}: skipped, {message[1]}")
        elif kind == "interrupted":
            echo(f"[{i}/{n}] {spec.name}: {message[1]}")
            outcome.stopped = outcome.stopped or Interrupted(message[1], message[2])
        else:
            line = first_line(message[1])
            echo(f"[{i}/{n}] {spec.name}: failed: {line}")
            outcome.failed.append((spec.name, line))
        if done is not None:
            done(spec, message)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            while len(state.running) < jobs and not state.stopped:
                if not queue and more is not None:
                    queue.extend(more())
                if not queue:
                    break
                start(*queue.pop(0))
            if state.stopped and queue:
                for i, spec in queue:
                    echo(f"[{i}/{n}] {spec.name}: not started: nlpkit run was stopped")
                queue.clear()
            if not state.running:
                break
            listening = {run.conn: run for run in state.running.values() if not run.heard}
            for ready in wait([*listening, *state.running]):
                if ready in listening:  # a tracker call, its outcome, or EOF: the child closed its end by exiting
                    listening[ready].hear(host)
            for sentinel, run in list(state.running.items()):
                if run.process.exitcode is None:
                    continue  # still running (or reporting, then exiting)
                while not run.heard and run.conn.poll():
                    run.hear(host)
                run.conn.close()
                del state.running[sentinel]
                finish(run)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        host.close()  # the last runs' tracker calls are made before the report is attached
    if state.stopped:
        text = str(outcome.stopped) if outcome.stopped else (f"Stopped by signal {state.stopped[0]}: running runs "
                                                             "wrote their checkpoints; run the same command again "
                                                             "to resume")
        outcome.stopped = Interrupted(text, state.stopped[0])
    return outcome


def _latest_step(spec: RunSpec) -> int | None:
    from nlpkit.train.checkpoint import latest_step

    return latest_step(spec.folder / "checkpoints")


__all__ = ["CHILD_SETUP", "NlpkitError", "cpu_cores", "died", "run_isolated"]
