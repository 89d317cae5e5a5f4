"""Pruning through the lifecycle hooks: in a trial's own process, ``on_evaluate`` reports each validation value
to the trial's Optuna trial (the study reloaded from its storage, named in the run folder's trial.json) and stops
the run when the pruner says the trial is hopeless; the sweep's process then tells the study it was PRUNED.

Installed in each trial's process through ``nlpkit.run.pool.CHILD_SETUP`` (or in ``nlpkit run``'s own process
for in-process runs) by :func:`install`; it does nothing for a run whose folder holds no trial.json.
"""

from __future__ import annotations

import json
import math
from typing import Any

import nlpkit
from nlpkit.contract import RunContext
from nlpkit.sweep.study import PRUNED, TRIAL_FILE, make_pruner, open_storage, optuna

PLUGIN_NAME = "nlpkit-sweep-pruning"


def install() -> None:
    """Register this module's hooks with the process's plugin manager (once)."""
    import sys

    from nlpkit.plugins import plugin_manager

    pm = plugin_manager()
    if pm.get_plugin(PLUGIN_NAME) is None:
        pm.register(sys.modules[__name__], name=PLUGIN_NAME)


def _trial(run: RunContext) -> tuple[Any, dict[str, Any]] | None:
    """The run's Optuna trial and its trial.json, loaded once per run (None: not a sweep trial)."""
    if "sweep_trial" not in run.extra:
        path = run.folder / TRIAL_FILE
        if not path.exists():
            run.extra["sweep_trial"] = None
        else:
            info = json.loads(path.read_text(encoding="utf-8"))
            op = optuna()
            study = op.load_study(study_name=info["study"], storage=open_storage(info["storage"]),
                                  sampler=op.samplers.RandomSampler(),
                                  pruner=make_pruner(info["pruner"], info["pruner_startup_trials"],
                                                     info["pruner_warmup_steps"]))
            run.extra["sweep_trial"] = (op.trial.Trial(study, info["trial_id"]), info)
    return run.extra["sweep_trial"]


@nlpkit.hookimpl
def on_evaluate(run: RunContext, step: int, metrics: dict[str, Any]) -> None:
    found = _trial(run)
    if found is None:
        return
    trial, info = found
    value = metrics.get(info["metric"])
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return
    trial.report(float(value), step)
    if info["pruner"] != "none" and trial.should_prune():
        run.stop(f"{PRUNED} at step {step} ({info['metric']} {value:.4g})")
