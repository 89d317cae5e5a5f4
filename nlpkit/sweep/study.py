"""The Optuna study of a task x model entry: where it is stored (a journal file in ``<output>/<recipe>/sweep/``,
safe for several processes and needing no server, or the recipe's storage URL), its sampler and pruner, what a
trial folder says about its trial, and what a killed sweep left behind.

A trial's outcome lives in its run folder (results.json); the study is told it. So a sweep killed at any moment
resumes: a trial left RUNNING whose folder finished is told its value; one whose folder did not is closed as
failed (tagged ``interrupted``, not counted) and its settings are enqueued, so the next trial asked for gets
them, finds the same folder and resumes from its checkpoint.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from nlpkit.errors import NlpkitError
from nlpkit.files import write_json
from nlpkit.run.folders import RunLocked, is_finished, run_lock
from nlpkit.sweep.schema import Sweep, SweepSchema

TRIAL_FILE = "trial.json"  # in a trial's run folder: which study and trial it is (read by the pruning hook)
PRUNED = "pruned by optuna"  # how results.json's stopped_early begins for a pruned trial


def optuna() -> Any:
    """Optuna, imported when a sweep needs it, or a clear message where it is missing."""
    try:
        import optuna as module
    except ImportError:
        raise NlpkitError("A sweep needs Optuna: pip install -e '.[sweep]'") from None
    module.logging.set_verbosity(module.logging.WARNING)
    return module


def storage_ref(sweep: Sweep) -> str:
    """The study's storage as trial.json names it: the recipe's URL, or ``journal:<absolute path>``."""
    if sweep.storage_url:
        return sweep.storage_url
    return "journal:" + str((sweep.folder / "journal.log").resolve())


def open_storage(ref: str) -> Any:
    """The storage ``storage_ref`` named (the journal file's folder made when missing)."""
    if not ref.startswith("journal:"):
        return ref
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = Path(ref.removeprefix("journal:"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def make_pruner(kind: str, startup_trials: int, warmup_steps: int) -> Any:
    op = optuna()
    if kind == "median":
        return op.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_steps)
    return op.pruners.NopPruner()


def make_sampler(schema: SweepSchema, grid: dict[str, list[Any]], trials_before: int = 0) -> Any:
    """The sampler; a seeded one is seeded with ``seed`` plus the trials the study already holds, so a resumed
    sweep does not propose the first session's settings over again."""
    op = optuna()
    seed = None if schema.seed is None else schema.seed + trials_before
    if schema.sampler == "random":
        return op.samplers.RandomSampler(seed=seed)
    if schema.sampler == "grid":
        return op.samplers.GridSampler(grid, seed=seed)
    return op.samplers.TPESampler(seed=seed)


def open_study(sweep: Sweep, name: str, grid: dict[str, list[Any]]) -> Any:
    """The study ``name``, created on the first run of the sweep and loaded (resumed) on the next."""
    op = optuna()
    schema = sweep.schema
    try:
        study = op.create_study(study_name=name, storage=open_storage(storage_ref(sweep)), load_if_exists=True,
                                sampler=make_sampler(schema, grid), direction=sweep.direction,
                                pruner=make_pruner(schema.pruner, schema.pruner_startup_trials,
                                                   schema.pruner_warmup_steps))
    except (ValueError, ImportError, ModuleNotFoundError) as err:  # a bad URL, a missing database driver
        raise NlpkitError(f"sweep.storage: cannot open the study '{name}' in {storage_ref(sweep)}: {err}") from None
    study.sampler = make_sampler(schema, grid, len(study.get_trials(deepcopy=False)))
    wanted = op.study.StudyDirection.MAXIMIZE if sweep.direction == "maximize" else op.study.StudyDirection.MINIMIZE
    if study.direction != wanted:
        raise NlpkitError(f"The study '{name}' in {storage_ref(sweep)} was made to {study.direction.name.lower()}, "
                          f"the recipe says {sweep.direction}: remove {sweep.folder} (or give another sweep.storage)")
    return study


def write_trial_file(folder: Path, study: str, storage: str, trial: Any, metric: str, schema: SweepSchema) -> None:
    """Tell the trial's process which Optuna trial it is (the pruning hook reports to it)."""
    write_json(folder / TRIAL_FILE, {"study": study, "storage": storage, "trial": trial.number,
                                     "trial_id": trial._trial_id, "metric": metric, "pruner": schema.pruner,
                                     "pruner_startup_trials": schema.pruner_startup_trials,
                                     "pruner_warmup_steps": schema.pruner_warmup_steps,
                                     "params": trial.params})


def read_outcome(folder: Path, metric: str) -> tuple[str, float | None, dict[str, Any]] | None:
    """What a trial folder says: None while it is unfinished; else (state, value, results) with state
    "complete", "pruned" (stopped by the pruner) or "fail" (its validation holds no such metric)."""
    if not is_finished(folder):
        return None
    results = json.loads((Path(folder) / "results.json").read_text(encoding="utf-8"))
    if str(results.get("stopped_early") or "").startswith(PRUNED):
        return "pruned", None, results
    value = (results.get("validation") or {}).get(metric)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "fail", None, results
    return "complete", float(value), results


def tell(study: Any, trial: Any, state: str, value: float | None) -> None:
    op = optuna()
    if state == "complete":
        study.tell(trial, value)
    else:
        study.tell(trial, state=op.trial.TrialState.PRUNED if state == "pruned" else op.trial.TrialState.FAIL)


def counted(study: Any) -> int:
    """Trials that count towards ``sweep.trials``: ended ones, less those closed because a kill interrupted them
    (their settings run again)."""
    states = optuna().trial.TrialState
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in (states.COMPLETE, states.PRUNED, states.FAIL) and not t.user_attrs.get("interrupted"))


def _in_use(folder: Path) -> bool:
    try:
        with run_lock(folder):
            return False
    except RunLocked:
        return True


def recover(study: Any, metric: str, say: Any) -> list[str]:
    """Deal with the trials a killed sweep left RUNNING (those another live process trains are left alone):
    tell the finished ones their value; close the others and enqueue their settings, so they resume. Returns
    one line per trial, for the log."""
    op = optuna()
    lines = []
    for t in study.get_trials(deepcopy=False, states=(op.trial.TrialState.RUNNING,)):
        folder = Path(t.user_attrs.get("folder", ""))
        if t.user_attrs.get("folder") and folder.exists() and _in_use(folder):
            continue
        found = read_outcome(folder, metric) if t.user_attrs.get("folder") else None
        if found:
            tell(study, t.number, found[0], found[1])
            lines.append(f"trial {t.number} ({folder.name}): finished before the sweep stopped, kept ({found[0]})")
            continue
        op.trial.Trial(study, t._trial_id).set_user_attr("interrupted", True)
        study.tell(t.number, state=op.trial.TrialState.FAIL)
        study.enqueue_trial(dict(t.params), user_attrs={"resumes_trial": t.number})
        lines.append(f"trial {t.number} ({folder.name or '?'}): interrupted, its settings run again (resuming "
                     "from its checkpoint where it wrote one)")
    for line in lines:
        say(f"sweep: {line}")
    return lines
