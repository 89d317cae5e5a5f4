"""Run folders: where each run's files live, written atomically so a crash never leaves half a file.

    runs/<recipe>/<task>-<model>-seed<k>/
        recipe.yaml         the resolved configuration of this one run
        task.json           the task's state (labels), so `nlpkit predict` can rebuild it
        metrics.jsonl       training and validation logs, one JSON object per line
        predictions.jsonl   test predictions, one per example
        model/              the trained model (safetensors + tokenizer + config)
        checkpoints/        resumable training state (removed when the run finishes)
        results.json        written last: its presence means the run finished
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from nlpkit.errors import NlpkitError


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_yaml(path: Path, obj: Any) -> None:
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def run_name(task: str, model: str, seed: int) -> str:
    return f"{task}-{model}-seed{seed}"


def is_finished(folder: Path) -> bool:
    return (Path(folder) / "results.json").exists()


class MetricsLog:
    """Appends one JSON line per event; each line is flushed so a crash loses at most the line being written."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def __call__(self, **row: Any) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False, default=float) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after ``step`` (a resumed run replays them)."""
        if self.enabled and self.path.exists():
            keep = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
            write_jsonl(self.path, keep)


@contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """One process per run folder. A lock left by a process that no longer exists (same host) is taken over."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".lock"
    me = f"{socket.gethostname()}:{os.getpid()}"
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            owner = lock.read_text().strip() if lock.exists() else ""
            host, _, pid = owner.partition(":")
            if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                lock.unlink(missing_ok=True)  # stale: its process was killed
                continue
            raise NlpkitError(
                f"Run folder {folder} is locked by process {owner or '?'} (delete {lock} if it is gone)"
            ) from None
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
