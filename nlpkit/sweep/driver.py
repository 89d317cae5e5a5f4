"""Running a sweep: per study, ask Optuna for a trial, run it as an ordinary run through the process pool
(``--jobs N``: N trials at once against one study), tell the study its outcome read from its run folder; then
return the best settings' runs over ``best_seeds`` for ``nlpkit run`` to run beside the recipe's own.

A trial whose folder already finished (the sampler proposed settings already trained, or a kill came after the
run finished) is told its value from the folder, never trained again; a failed trial is told FAIL and the sweep
goes on; a signal stops the sweep, leaving the running trials RUNNING in the study for the next run to resume.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nlpkit.config.recipe import Recipe, RunSpec
from nlpkit.errors import NlpkitError
from nlpkit.files import write_json
from nlpkit.run.engine import execute, first_line, fresh_accelerate_state, in_process_requested
from nlpkit.run.folders import RunLocked
from nlpkit.sweep import pruning
from nlpkit.sweep.schema import StudyPlan, Sweep
from nlpkit.sweep.space import best_specs, distributions, grid, trial_spec
from nlpkit.sweep.study import (
    counted,
    open_study,
    optuna,
    read_outcome,
    recover,
    storage_ref,
    tell,
    write_trial_file,
)
from nlpkit.train.checkpoint import Interrupted

Say = Callable[[str], Any]


@dataclass
class StudyOutcome:
    plan: StudyPlan
    best: dict[str, Any] | None  # the best trial's params, None when no trial completed
    trained: list[str] = field(default_factory=list)  # trial folders trained (or resumed) by this run
    reused: list[str] = field(default_factory=list)  # trial folders found finished: read back, not trained


def run_sweep(recipe: Recipe, sweep: Sweep, jobs: int = 1, restart: bool = False, say: Say = print
              ) -> tuple[list[RunSpec], list[StudyOutcome]]:
    """Run every study of the sweep; returns the best settings' runs (over ``best_seeds``) and what each study
    did. Raises :class:`Interrupted` when a signal stopped it (the next run resumes)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise NlpkitError("A sweep runs each trial in a process of its own: run it with `nlpkit run` (--jobs N), "
                          "not under torchrun/accelerate")
    from nlpkit.sweep import section

    section.register()  # the report's sweep section
    best_runs, outcomes = [], []
    for plan in sweep.studies:
        outcome = run_study(sweep, plan, jobs, restart, say)
        outcomes.append(outcome)
        if outcome.best is not None:
            best_runs += best_specs(plan, outcome.best, sweep.best_seeds)
    return best_runs, outcomes


def run_study(sweep: Sweep, plan: StudyPlan, jobs: int, restart: bool, say: Say) -> StudyOutcome:
    op = optuna()
    study = open_study(sweep, plan.name, grid(plan.parameters))
    recover(study, sweep.metric, say)
    total = sweep.schema.trials
    before = counted(study)
    remaining = total - before
    outcome = StudyOutcome(plan, None)
    say(f"Sweep {plan.name}: {before} of {total} trials done, {max(remaining, 0)} to go "
        f"({sweep.schema.sampler} sampler, {sweep.schema.pruner} pruner, {sweep.direction} {sweep.metric})")
    dists, ref = distributions(plan.parameters), storage_ref(sweep)
    _same_choices(study, dists, sweep)
    running: dict[str, Any] = {}  # trial folder -> its Optuna trial
    asked = 0

    def more() -> list[tuple[int, RunSpec]]:
        nonlocal asked
        while asked < remaining:
            trial = study.ask(dists)
            asked += 1
            spec = trial_spec(plan, trial.params)
            trial.set_user_attr("folder", str(spec.folder))
            if str(spec.folder) in running:  # proposed again while it trains: no second writer, no double count
                tell(study, trial, "fail", None)
                say(f"[{before + asked}/{total}] {spec.name}: the same settings are training now; trial "
                    f"{trial.number} skipped")
                continue
            found = read_outcome(spec.folder, sweep.metric)
            if found:
                tell(study, trial, found[0], found[1])
                outcome.reused.append(spec.folder.name)
                say(f"[{before + asked}/{total}] {spec.name}: finished before ({_said(found)}), not trained again")
                continue
            spec.folder.mkdir(parents=True, exist_ok=True)
            write_trial_file(spec.folder, plan.name, ref, trial, sweep.metric, sweep.schema)
            running[str(spec.folder)] = trial
            outcome.trained.append(spec.folder.name)
            return [(before + asked, spec)]
        return []

    def done(spec: RunSpec, message: tuple) -> None:
        trial = running.pop(str(spec.folder))
        kind = message[0]
        if kind == "interrupted":
            return  # left RUNNING: the next run of the sweep resumes it
        if kind == "locked":  # another process trains these settings: its own trial tells their outcome
            trial.set_user_attr("interrupted", True)
            tell(study, trial, "fail", None)
            return
        found = read_outcome(spec.folder, sweep.metric) if kind == "finished" else None
        if found is None:
            trial.set_user_attr("error", first_line(str(message[1]))[:500])
            tell(study, trial, "fail", None)
            return
        if found[0] == "fail":
            say(f"  {spec.name}: its validation metrics hold no '{sweep.metric}' "
                f"({', '.join(found[2].get('validation') or {}) or 'none'}): told FAIL")
        tell(study, trial, found[0], found[1])

    _run_trials(more, done, total, jobs, restart, say)
    write_summary(sweep, plan, study)
    complete = study.get_trials(deepcopy=False, states=(op.trial.TrialState.COMPLETE,))
    if complete:
        best = study.best_trial
        outcome.best = dict(best.params)
        say(f"Sweep {plan.name}: best trial {best.number}, {sweep.metric} = {best.value:.4f}, {best.params}")
    else:
        say(f"Sweep {plan.name}: no trial completed, so no best settings to re-run")
    return outcome


def _same_choices(study: Any, dists: dict[str, Any], sweep: Sweep) -> None:
    """Optuna cannot change a categorical parameter's choices within a study: say so before asking."""
    categorical = optuna().distributions.CategoricalDistribution
    for t in study.get_trials(deepcopy=False):
        for path, dist in t.distributions.items():
            if isinstance(dist, categorical) and path in dists and dist != dists[path]:
                raise NlpkitError(
                    f"sweep.parameters.{path}: the study '{study.study_name}' holds trials with the choices "
                    f"{list(dist.choices)}, the recipe now names {list(getattr(dists[path], 'choices', []))}; "
                    f"Optuna cannot change a categorical parameter's choices within a study: restore them, or "
                    f"start a new study (remove {sweep.folder}, or give another sweep.storage)")


def _said(found: tuple) -> str:
    state, value, _ = found
    return f"{value:.4f}" if state == "complete" else state


def _run_trials(more: Callable[[], list], done: Callable[[RunSpec, tuple], None], n: int, jobs: int,
                restart: bool, say: Say) -> None:
    """The trials through the process pool (each in a fresh process, ``jobs`` at a time, the pruning hook
    installed in each), or one after another in this process under ``NLPKIT_IN_PROCESS=1``."""
    if in_process_requested():
        pruning.install()
        cache: dict = {}
        while batch := more():
            for i, spec in batch:
                say(f"[{i}/{n}] {spec.name}: training")
                fresh_accelerate_state()
                try:
                    res = execute(spec, cache=cache, restart=restart)
                    message: tuple = ("finished", res)
                    say(f"[{i}/{n}] {spec.name}: validation {_value_line(res)}")
                except Interrupted as err:
                    done(spec, ("interrupted", str(err), err.signum))
                    raise
                except RunLocked as err:
                    message = ("locked", str(err))
                except Exception as err:  # noqa: BLE001 - a failed trial is told FAIL, the sweep goes on
                    message = ("failed", f"{type(err).__name__}: {err}")
                    say(f"[{i}/{n}] {spec.name}: failed: {first_line(message[1])}")
                done(spec, message)
        return
    from nlpkit.run import pool

    pool.CHILD_SETUP.append(pruning.install)
    try:
        result = pool.run_isolated([], n, jobs, restart, say, more=more, done=done)
    finally:
        pool.CHILD_SETUP.remove(pruning.install)
    if result.stopped:
        raise result.stopped


def _value_line(res: dict[str, Any]) -> str:
    scores = res.get("validation") or {}
    text = ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if isinstance(v, float))
    return text + (f" ({res['stopped_early']})" if res.get("stopped_early") else "")


def write_summary(sweep: Sweep, plan: StudyPlan, study: Any) -> None:
    """``<output>/<recipe>/sweep/<task>-<entry>.json``: every trial (settings, value, state, time, folder), the
    best one and the parameters' importances, for the report's sweep section (which reads no study)."""
    op = optuna()
    trials = []
    for t in study.get_trials(deepcopy=False):
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        trials.append({"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
                       "seconds": seconds, "folder": t.user_attrs.get("folder"),
                       "interrupted": bool(t.user_attrs.get("interrupted")), "error": t.user_attrs.get("error"),
                       "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())}})
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == op.trial.TrialState.COMPLETE]
    best = study.best_trial if complete else None
    importance, why = None, None
    if len(plan.parameters) < 2:
        why = "one parameter: nothing to weigh it against"
    elif len(complete) < 2:
        why = f"{len(complete)} completed trial(s): importances need at least 2"
    else:
        try:
            with warnings.catch_warnings():  # e.g. "importances will be equal" on a handful of trials: shown as such
                warnings.simplefilter("ignore")
                importance = {k: float(v) for k, v in op.importance.get_param_importances(study).items()}
        except (RuntimeError, ValueError) as err:
            why = str(err)
    write_json(sweep.folder / f"{plan.key}.json", {
        "study": plan.name, "task": plan.base.task.name, "entry": plan.base.label, "metric": sweep.metric,
        "direction": sweep.direction, "sampler": sweep.schema.sampler, "pruner": sweep.schema.pruner,
        "trials_wanted": sweep.schema.trials, "parameters": {p: v.model_dump(exclude_defaults=True)
                                                             for p, v in plan.parameters.items()},
        "storage": storage_ref(sweep), "best": None if best is None else
        {"number": best.number, "value": best.value, "params": best.params}, "best_seeds": sweep.best_seeds,
        "importance": importance, "importance_missing": why, "trials": trials,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
