"""One run's trackers, driven so that none can fail the run or hold it up.

Fail: a tracker whose call raises is reported once (a warning naming it and its error) and switched off for the
rest of the run; the others and the run go on.

Slow: the training loop never makes a tracker call itself. Where the run has a parent that hosts trackers (each
run of ``nlpkit run`` is a child of it, see nlpkit.track.host), the calls travel there and the trackers live in
that one long-lived process: MLflow is imported and its store opened once per recipe, not once per run (~2.5 s of
CPU a run, taken from the run on a busy machine). Elsewhere (a run in the launching process, under torchrun, on a
cluster node) they run in order on a thread of the run's own process. Either way the loop waits only where
waiting is the point: at a checkpoint (what was logged up to it must be on disk before a kill can strike, so a
resumed run neither repeats nor loses a point). What the trackers cost is kept in ``tracking.json`` (``cost``:
seconds spent in the trackers, by tracker and call, and seconds the run waited for them)."""

from __future__ import annotations

import copy
import logging
import math
import queue
import threading
import time
from pathlib import Path
from typing import Any

from nlpkit.contract import RunContext, Tracker
from nlpkit.plugins import Registry
from nlpkit.track.state import remember

log = logging.getLogger("nlpkit.track")
COST = "cost"  # the tracking.json entry with the trackers' cost (not a tracker's name)


def numeric(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """The finite numbers of ``metrics`` (a log row, an evaluation) as ``prefix/name`` scalars."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[f"{prefix}/{key}"] = float(value)
    return out


class Trackers:
    """The trackers one run asked for (``run.trackers``), built from ``registry``, wherever they live: ``make``
    calls a method on each one still on, timing it and switching off one that raises."""

    def __init__(self, run: RunContext, registry: Registry):
        self.run = run
        self.active: dict[str, Tracker] = {}
        self.off: dict[str, str] = {}  # tracker -> why it was switched off
        self.busy: dict[str, float] = {}  # "tracker.method" -> seconds spent in it
        for name in run.trackers:
            started = time.perf_counter()
            try:
                self.active[name] = registry.tracker(name)(run)
            except Exception as err:  # noqa: BLE001 - a tracker must never fail a run
                self._switch_off(name, "__init__", err)
            self.busy[f"{name}.__init__"] = time.perf_counter() - started

    def make(self, method: str, args: tuple) -> None:
        for name, tracker in list(self.active.items()):
            started = time.perf_counter()
            try:
                getattr(tracker, method)(*args)
            except Exception as err:  # noqa: BLE001 - a tracker must never fail a run
                self._switch_off(name, method, err)
            key = f"{name}.{method}"
            self.busy[key] = self.busy.get(key, 0.0) + time.perf_counter() - started

    def close(self, waited: float, where: str) -> None:
        """Record what the trackers cost (``waited``: seconds the run waited for them) in tracking.json."""
        busy = sum(self.busy.values())
        log.info("run %s: %.2f s in its trackers (%s), %.2f s of which the run waited for", self.run.name, busy,
                 where, waited)
        if self.run.is_main_process:
            try:
                remember(Path(self.run.folder), COST, {
                    "seconds_in_trackers": round(busy, 3), "seconds_the_run_waited": round(waited, 3),
                    "where": where, "seconds_by_call": {method: round(s, 3) for method, s in self.busy.items()}})
            except OSError as err:  # the record of a cost must not fail the run either
                log.warning("could not write the trackers' cost for run %s: %s", self.run.name, err)

    def _switch_off(self, name: str, method: str, err: BaseException) -> None:
        self.active.pop(name, None)
        self.off[name] = f"{type(err).__name__}: {err}"
        log.warning("tracker '%s' failed in %s (%s); it is off for the rest of run %s, which goes on",
                    name, method, self.off[name], self.run.name)


class Session:
    """What the lifecycle hooks hand a run's trackers, as calls; a subclass says where the calls are made
    (``call``: queue one, ``wait``: until every one queued so far was made, ``_close``: after the last)."""

    def __init__(self, run: RunContext):
        self.run = run
        self.waited = 0.0  # seconds the run's own thread waited for the trackers

    def call(self, method: str, *args: Any) -> None:
        raise NotImplementedError

    def wait(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    # --- what the lifecycle hooks hand over --------------------------------------------------------
    def start(self) -> None:
        self.call("start", self.run.resume_step)
        self.call("log_settings", self.run.settings)

    def train_log(self, step: int, metrics: dict[str, Any]) -> None:
        self.call("log_scalars", step, numeric(metrics, "train"))

    def evaluation(self, step: int, metrics: dict[str, Any]) -> None:
        self.call("log_scalars", step, numeric(metrics, "validation"))

    def checkpoint(self, step: int) -> None:
        self.call("checkpoint", step)
        self.wait()  # the checkpoint's promise: nothing logged up to it is lost to a kill after it

    def results(self, results: dict[str, Any]) -> None:
        self.call("log_results", results)

    def end(self, status: str) -> None:
        if status == "finished":
            folder = Path(self.run.folder)
            files = {name: folder / name for name in ("model", "results.json", "recipe.yaml", "metrics.jsonl")}
            self.call("log_artifacts", {name: path for name, path in files.items() if path.exists()})
        self.call("end", status)
        self._close()


class TrackingSession(Session):
    """A run's trackers on a thread of the run's own process."""

    def __init__(self, run: RunContext, registry: Registry):
        super().__init__(run)
        self._calls: queue.Queue[tuple[str, tuple] | None] = queue.Queue()
        self.trackers: Trackers | None = None  # built on the worker thread
        self._worker = threading.Thread(target=self._work, args=(registry,), name=f"nlpkit-track-{run.name}",
                                        daemon=True)
        self._worker.start()

    def call(self, method: str, *args: Any) -> None:
        """Queue ``method(*args)`` for every tracker still on; the arguments are copied, so the run may go on
        changing its own dicts."""
        self._calls.put((method, copy.deepcopy(args)))

    def wait(self) -> None:
        """Return once every call queued so far has been made."""
        started = time.perf_counter()
        self._calls.join()
        self.waited += time.perf_counter() - started

    def _work(self, registry: Registry) -> None:
        self.trackers = trackers = Trackers(self.run, registry)  # here: an import (MLflow's ~1 s) holds nothing up
        while (item := self._calls.get()) is not None:
            trackers.make(*item)
            self._calls.task_done()
        self._calls.task_done()

    def _close(self) -> None:
        started = time.perf_counter()
        self._calls.put(None)
        self._worker.join()
        self.waited += time.perf_counter() - started
        if self.trackers is not None:
            self.trackers.close(self.waited, "a thread of the run's process")
