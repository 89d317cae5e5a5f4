"""The lifecycle-hook plugin (entry point ``tracking``) that drives the trackers a run asked for (``track:`` or
``nlpkit run --track``). Hooks fire on the main process only; a run that asked for none costs one check per hook.
The trackers live in the ``nlpkit run`` process when the run is its child (nlpkit.track.host), else in the run's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nlpkit.contract import RunContext
from nlpkit.hookspecs import hookimpl
from nlpkit.plugins import registry
from nlpkit.track.host import HostedSession, parent
from nlpkit.track.session import Session, TrackingSession

KEY = "nlpkit.track"  # the run's session, in RunContext.extra


def _session(run: RunContext) -> Session | None:
    return run.extra.get(KEY)


@hookimpl
def on_run_start(run: RunContext) -> None:
    if run.trackers:
        host = parent()
        session = run.extra[KEY] = HostedSession(run, host) if host else TrackingSession(run, registry())
        session.start()


@hookimpl
def on_log(run: RunContext, step: int, metrics: dict[str, Any]) -> None:
    if session := _session(run):
        session.train_log(step, metrics)


@hookimpl
def on_evaluate(run: RunContext, step: int, metrics: dict[str, Any]) -> None:
    if session := _session(run):
        session.evaluation(step, metrics)


@hookimpl
def on_checkpoint(run: RunContext, step: int, folder: Path) -> None:
    if session := _session(run):
        session.checkpoint(step)


@hookimpl
def on_results(run: RunContext, results: dict[str, Any]) -> None:
    if session := _session(run):
        session.results(results)


@hookimpl
def on_run_end(run: RunContext, status: str, error: BaseException | None) -> None:
    if session := run.extra.pop(KEY, None):
        session.end(status)
