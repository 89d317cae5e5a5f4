"""The metrics log of a run (metrics.jsonl): one JSON line per training or validation event."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nlpkit.files import disk_errors


class MetricsLog:
    """Appends one JSON line per event; each line is flushed so a crash loses at most the line being written."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def __call__(self, **row: Any) -> None:
        if not self.enabled:
            return
        with disk_errors(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False, default=float) + "\n")

    def position(self) -> int:
        """Bytes written so far: a checkpoint records it so a resumed run can drop what came after."""
        return self.path.stat().st_size if self.enabled and self.path.exists() else 0

    def truncate(self, position: int = 0) -> None:
        """Drop everything logged after ``position`` (a resumed run logs those steps again)."""
        if self.enabled and self.path.exists():
            os.truncate(self.path, position)
