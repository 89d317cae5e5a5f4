"""After ``nlpkit run`` wrote the comparison report: its figures and summary go to every tracked run's record
(``Tracker.attach``), so a tracker's UI shows the comparison beside each run. Never fails the command."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nlpkit.plugins import Registry

log = logging.getLogger("nlpkit.track")


def report_files(report: Path) -> dict[str, Path]:
    """The report's parts worth attaching: its figures folder and summary (those that exist)."""
    files = {name: Path(report) / name for name in ("figures", "summary.md", "summary.csv")}
    return {name: path for name, path in files.items() if path.exists()}


def attach_report(runs: Iterable[Any], report: Path, registry: Registry) -> None:
    """Attach the report in ``report`` to the finished runs among ``runs`` (RunSpecs) that asked for trackers."""
    files = report_files(report)
    if not files:
        return
    for spec in runs:
        if not (Path(spec.folder) / "results.json").exists():
            continue
        for name in spec.track:
            try:
                registry.tracker(name).attach(Path(spec.folder), files)
            except Exception as err:  # noqa: BLE001 - the report is written; tracking it is a bonus
                log.warning("tracker '%s' could not attach the report to run %s: %s: %s", name, spec.name,
                            type(err).__name__, err)
