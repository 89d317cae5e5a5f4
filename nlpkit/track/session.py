"""One run's trackers, driven so that none can fail the run: a tracker whose call raises is reported once (a
warning naming it and its error) and switched off for the rest of the run; the others and the run go on."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from nlpkit.contract import RunContext, Tracker
from nlpkit.plugins import Registry

log = logging.getLogger("nlpkit.track")


def numeric(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """The finite numbers of ``metrics`` (a log row, an evaluation) as ``prefix/name`` scalars."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[f"{prefix}/{key}"] = float(value)
    return out


class TrackingSession:
    """The trackers ``run.trackers`` names, built from ``registry``; ``call`` fans a method out to those still on."""

    def __init__(self, run: RunContext, registry: Registry):
        self.run = run
        self.active: dict[str, Tracker] = {}
        self.off: dict[str, str] = {}  # tracker -> why it was switched off
        for name in run.trackers:
            try:
                self.active[name] = registry.tracker(name)(run)
            except Exception as err:  # noqa: BLE001 - a tracker must never fail a run
                self._switch_off(name, "__init__", err)

    def call(self, method: str, *args: Any) -> None:
        for name, tracker in list(self.active.items()):
            try:
                getattr(tracker, method)(*args)
            except Exception as err:  # noqa: BLE001 - a tracker must never fail a run
                self._switch_off(name, method, err)

    def _switch_off(self, name: str, method: str, err: BaseException) -> None:
        self.active.pop(name, None)
        self.off[name] = f"{type(err).__name__}: {err}"
        log.warning("tracker '%s' failed in %s (%s); it is off for the rest of run %s, which goes on",
                    name, method, self.off[name], self.run.name)

    # --- what the lifecycle hooks hand over --------------------------------------------------------
    def start(self) -> None:
        self.call("start", self.run.resume_step)
        self.call("log_settings", self.run.settings)

    def train_log(self, step: int, metrics: dict[str, Any]) -> None:
        self.call("log_scalars", step, numeric(metrics, "train"))

    def evaluation(self, step: int, metrics: dict[str, Any]) -> None:
        self.call("log_scalars", step, numeric(metrics, "validation"))

    def results(self, results: dict[str, Any]) -> None:
        self.call("log_results", results)

    def end(self, status: str) -> None:
        if status == "finished":
            folder = Path(self.run.folder)
            files = {name: folder / name for name in ("model", "results.json", "recipe.yaml", "metrics.jsonl")}
            self.call("log_artifacts", {name: path for name, path in files.items() if path.exists()})
        self.call("end", status)
