"""A trial's settings: the Optuna distributions of a study's parameters, and the run they make (a trial folder
named by the hash of its settings, so two trials never share a folder and one set of settings always finds its
own, finished or half-trained)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nlpkit.config.recipe import RunSpec
from nlpkit.sweep.schema import Parameter, StudyPlan, trial_settings


@dataclass
class TrialSpec(RunSpec):
    """An ordinary run (same engine, same folder layout) of a sweep's trial: ``<output>/<recipe>/trials/
    <task>-<entry>-<hash>``, the hash of its resolved settings; it never reads the test split."""

    trial_hash: str = ""

    @property
    def name(self) -> str:
        return f"{self.task.key}-{self.label}-{self.trial_hash}"

    @property
    def folder(self):  # noqa: ANN201 - a Path, as RunSpec's
        return self.output / self.recipe / "trials" / self.name


HASH_DIGITS = 8


def trial_spec(study: StudyPlan, values: dict[str, Any]) -> TrialSpec:
    """The run of ``study``'s base run with ``values`` (parameter path -> value) put in."""
    base = study.base
    task, model_options, train = trial_settings(study, values)
    spec = TrialSpec(base.recipe, task, base.label, base.model, model_options, train, base.seed, base.output,
                     test_split=False, track=base.track)
    spec.trial_hash = spec.settings_hash[:HASH_DIGITS]
    return spec


def best_specs(study: StudyPlan, values: dict[str, Any], seeds: list[int]) -> list[RunSpec]:
    """The best settings' runs over ``seeds``: ordinary runs (they read test) beside the recipe's own, as model
    entry ``<entry>-best``."""
    base = study.base
    task, model_options, train = trial_settings(study, values)
    return [RunSpec(base.recipe, task, f"{base.label}-best", base.model, model_options, train, seed, base.output,
                    track=base.track)
            for seed in seeds]


def distributions(parameters: dict[str, Parameter]) -> dict[str, Any]:
    """Optuna distributions, by parameter path (the path is the parameter's name in the study)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for path, p in parameters.items():
        if p.type == "categorical":
            out[path] = CategoricalDistribution(list(p.choices or []))
        elif p.type == "int":
            out[path] = IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
        else:
            out[path] = FloatDistribution(float(p.low), float(p.high), log=p.log, step=p.step)
    return out


def grid(parameters: dict[str, Parameter]) -> dict[str, list[Any]]:
    """Every value of each parameter, for the grid sampler (a float range needs a step: checked by the schema)."""
    out: dict[str, list[Any]] = {}
    for path, p in parameters.items():
        if p.type == "categorical":
            out[path] = list(p.choices or [])
        else:
            step = p.step or 1
            count = int(round((p.high - p.low) / step)) + 1
            values = [p.low + i * step for i in range(count) if p.low + i * step <= p.high + 1e-12]
            out[path] = [int(v) for v in values] if p.type == "int" else [round(v, 12) for v in values]
    return out
