"""The ``local`` launcher (the default): every run in a fresh process of its own on this machine, ``jobs`` at a time
(``nlpkit run --jobs N`` sets ``jobs``), exactly as nlpkit.run.pool does; ``NLPKIT_IN_PROCESS=1`` runs them in the
``nlpkit run`` process itself."""

from __future__ import annotations

from typing import Any

from pydantic import Field

import nlpkit
from nlpkit.contract import Launcher, RunOutcome
from nlpkit.run.engine import in_process_requested, run_in_process


class LocalOptions(nlpkit.Options):
    jobs: int = Field(1, ge=1, description="Runs trained side by side, each with its share of the cores (or one "
                                           "GPU); `nlpkit run --jobs N` sets it.")


def as_outcome(name: str, message: tuple) -> RunOutcome:
    """A run's outcome from what its child process reported (nlpkit.run.pool)."""
    kind = message[0]
    if kind == "finished":
        return RunOutcome(name, "finished", results=message[1])
    if kind == "interrupted":
        return RunOutcome(name, "interrupted", error=message[1], signum=message[2])
    if kind == "locked":
        return RunOutcome(name, "skipped", error=message[1])
    return RunOutcome(name, "failed", error=message[1])


class LocalLauncher(Launcher):
    name = "local"
    Options = LocalOptions

    def launch(self, runs: list[tuple[int, Any]], total: int, restart: bool, say: Any) -> list[RunOutcome]:
        if in_process_requested():
            outcome = run_in_process(runs, total, restart, say)
            failed = dict(outcome.failed)
            by_run = {r.get("run") or f"{r['task']}-{r['model']}-seed{r['seed']}": r for r in outcome.results}
            reported = []
            for _, spec in runs:
                results = by_run.get(spec.name)
                if results is not None:
                    reported.append(RunOutcome(spec.name, "finished", results=results))
                elif spec.name in failed:
                    reported.append(RunOutcome(spec.name, "failed", error=failed[spec.name]))
            return reported + self._stopped(runs, reported, outcome.stopped)
        from nlpkit.run.pool import run_isolated

        reported: list[RunOutcome] = []
        outcome = run_isolated(runs, total, self.options.jobs, restart, say,
                               done=lambda spec, message: reported.append(as_outcome(spec.name, message)))
        return reported + self._stopped(runs, reported, outcome.stopped)

    @staticmethod
    def _stopped(runs: list[tuple[int, Any]], reported: list[RunOutcome], stopped: Any) -> list[RunOutcome]:
        """The runs a signal kept from starting (or interrupted without a word): skipped, with the signal, so
        ``nlpkit run`` stops with it as before."""
        heard = {o.name for o in reported}
        signum = getattr(stopped, "signum", 0) if stopped else 0
        return [RunOutcome(spec.name, "interrupted" if signum else "skipped", error=str(stopped or "not started"),
                           signum=signum) for _, spec in runs if spec.name not in heard]


@nlpkit.hookimpl
def register_launchers(register):
    register(LocalLauncher)
