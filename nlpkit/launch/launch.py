"""Choosing a launcher for ``nlpkit run`` and turning what it reports into the engine's outcome (what the command
line says, and whether ``nlpkit run`` fails)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nlpkit.config.recipe import RunSpec
from nlpkit.contract import Launcher, RunOutcome
from nlpkit.launch.options import launcher_options
from nlpkit.plugins import Registry
from nlpkit.run.engine import Outcome, done_line, first_line
from nlpkit.train.checkpoint import Interrupted


def make_launcher(reg: Registry, name: str, texts: list[tuple[str, str]]) -> Launcher:
    """The launcher NAME with its options from the command line (flag, "k=v,...") texts."""
    cls = reg.launcher(name)
    return cls(launcher_options(cls, texts))


def engine_launch(launcher: Launcher) -> Callable[[list[tuple[int, RunSpec]], int, bool, Any], Outcome]:
    """``launcher`` as ``nlpkit.run.engine.run_recipe`` calls it: todo, total, restart, say -> Outcome."""

    def launch(todo: list[tuple[int, RunSpec]], total: int, restart: bool, say: Any) -> Outcome:
        outcome = Outcome()
        if not todo:
            return outcome
        reported = {o.name: o for o in launcher.launch(todo, total, restart, say)}
        for _, spec in todo:
            got = reported.get(spec.name) or RunOutcome(spec.name, "skipped", error="the launcher did not report it")
            record(outcome, spec, got)
        return outcome

    return launch


def record(outcome: Outcome, spec: RunSpec, got: RunOutcome) -> None:
    """Add one run's outcome to the engine's: its results, its failure, or the signal that stopped it (then
    ``nlpkit run`` stops with that signal's exit code and writes no report)."""
    if got.status == "finished" and got.results is not None:
        outcome.results.append(got.results)
    elif got.status == "failed":
        outcome.failed.append((spec.name, first_line(got.error)))
    elif got.signum:
        outcome.stopped = outcome.stopped or Interrupted(got.error, got.signum)


def describe(position: int, total: int, spec: RunSpec, got: RunOutcome) -> str:
    """The line ``nlpkit run`` says when a launched run ends, as the local pool says it."""
    prefix = f"[{position}/{total}] {spec.name}"
    if got.status == "finished" and got.results is not None:
        return done_line(position, total, spec, got.results)
    if got.status == "failed":
        return f"{prefix}: failed: {first_line(got.error)}"
    if got.status == "interrupted":
        return f"{prefix}: {got.error}"
    return f"{prefix}: skipped, {got.error}"
