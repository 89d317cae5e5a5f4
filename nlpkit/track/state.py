"""``tracking.json`` in a run folder: what each tracker must remember between a run's attempts (an MLflow run id,
so a resumed run continues the same MLflow run). Written atomically: a kill mid-write leaves the previous file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nlpkit.files import write_json

FILE = "tracking.json"


def recall(folder: Path, tracker: str) -> dict[str, Any] | None:
    """What ``tracker`` remembered for the run in ``folder`` (None: nothing, or an unreadable file)."""
    try:
        saved = json.loads((Path(folder) / FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    entry = saved.get(tracker) if isinstance(saved, dict) else None
    return entry if isinstance(entry, dict) else None


def remember(folder: Path, tracker: str, entry: dict[str, Any]) -> None:
    """Store ``entry`` for ``tracker``, keeping the other trackers' entries."""
    path = Path(folder) / FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = {}
    saved = saved if isinstance(saved, dict) else {}
    write_json(path, {**saved, tracker: entry})
