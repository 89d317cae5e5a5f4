"""Trackers hosted by ``nlpkit run`` for the runs it starts, each in a child process of its own (nlpkit.run.pool).

Why: a run's process is new, so trackers living in it import their libraries and open their stores once per run
(MLflow: ~2.5 s of CPU, taken from the run on a busy machine). The ``nlpkit run`` process outlives every run of
the recipe: hosted there, they are imported and opened once. The run's process keeps only a
:class:`HostedSession`, which sends each call through the pipe it already has to its parent (a pickled message
costs microseconds); a checkpoint still waits, until the parent answers that everything before it was made.

The parent's :class:`TrackingHost` makes the calls of all its children on one thread, in the order each child sent
them, so its scheduling loop never waits for a tracker either. A child that dies without ending its trackers
(SIGKILL, the OOM killer) has them ended for it, as "failed"."""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from nlpkit.contract import RunContext
from nlpkit.plugins import registry
from nlpkit.track.session import Session, Trackers

log = logging.getLogger("nlpkit.track")
OPEN, CALL, SYNC, SYNCED, CLOSE, GONE = ("track:open", "track:call", "track:sync", "track:synced", "track:close",
                                         "track:gone")  # GONE: from the parent itself, for a child that died
WHERE = "the nlpkit run process, which hosts the trackers of its runs"

_parent: Connection | None = None  # in a run's child process: the pipe to the parent that hosts its trackers


def hosted_by(conn: Connection | None) -> None:
    """Called in a run's child process: its trackers live in the parent at the other end of ``conn``."""
    global _parent
    _parent = conn


def parent() -> Connection | None:
    return _parent


class HostedSession(Session):
    """A run's side of hosted tracking: the lifecycle hooks' calls, sent to the parent as they come."""

    def __init__(self, run: RunContext, conn: Connection):
        super().__init__(run)
        self.conn: Connection | None = conn
        self._send((OPEN, dataclasses.replace(run, extra={})))

    def call(self, method: str, *args: Any) -> None:
        self._send((CALL, method, args))  # pickled now: the run may go on changing its own dicts

    def wait(self) -> None:
        started = time.perf_counter()
        if self._send((SYNC,)):
            try:
                while self.conn.recv() != (SYNCED,):
                    pass
            except (EOFError, OSError) as err:
                self._lost(err)
        self.waited += time.perf_counter() - started

    def _close(self) -> None:
        self._send((CLOSE, self.waited))  # no wait: the parent finishes the trackers while the next run starts

    def _send(self, message: tuple) -> bool:
        if self.conn is None:
            return False
        try:
            self.conn.send(message)
            return True
        except (OSError, ValueError) as err:
            self._lost(err)
            return False

    def _lost(self, err: BaseException) -> None:
        log.warning("the trackers' host process is gone (%s); run %s goes on untracked", err, self.run.name)
        self.conn = None


class TrackingHost:
    """The parent's side: the trackers of every child that asks, made on one thread. ``receive`` takes the
    tracking messages off a child's pipe (returning False for any other message); ``gone`` ends the trackers of
    a child that ended without closing them; ``close`` waits for the last calls."""

    def __init__(self) -> None:
        self._calls: queue.Queue[tuple[Connection, tuple] | None] = queue.Queue()
        self._runs: dict[Connection, Trackers] = {}
        self._worker: threading.Thread | None = None

    def receive(self, conn: Connection, message: Any) -> bool:
        if not (isinstance(message, tuple) and message and str(message[0]).startswith("track:")):
            return False
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="nlpkit-track-host", daemon=True)
            self._worker.start()
        self._calls.put((conn, message))
        return True

    def gone(self, conn: Connection) -> None:
        if self._worker is not None:
            self._calls.put((conn, (GONE,)))

    def close(self) -> None:
        if self._worker is not None:
            self._calls.put(None)
            self._worker.join()
            self._worker = None

    def _work(self) -> None:
        while (item := self._calls.get()) is not None:
            conn, message = item
            kind, trackers = message[0], self._runs.get(conn)
            try:
                if kind == OPEN:
                    self._runs[conn] = Trackers(message[1], registry())
                elif kind == CALL and trackers:
                    trackers.make(message[1], message[2])
                elif kind == SYNC:
                    conn.send((SYNCED,))
                elif kind == CLOSE and trackers:
                    trackers.close(message[1], WHERE)
                    del self._runs[conn]
                elif kind == GONE and trackers:
                    trackers.make("end", ("failed",))
                    trackers.close(0.0, WHERE)
                    del self._runs[conn]
            except (OSError, ValueError):  # the child's pipe closed under an answer: it ended meanwhile
                pass
            except Exception:  # noqa: BLE001 - the host must outlive any one run's tracking
                log.exception("tracking host: %s for a run failed", kind)
