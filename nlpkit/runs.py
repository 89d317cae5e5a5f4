"""Run folders: where each run's files live, written atomically so a crash never leaves half a file.

    runs/<recipe>/<task>-<model>-seed<k>/
        recipe.yaml         the resolved configuration of this one run and its settings_hash; also a valid
                            recipe: `nlpkit run <folder>/recipe.yaml` re-makes exactly this run
        task.json           the task's state (labels), so `nlpkit predict` can rebuild it
        metrics.jsonl       training and validation logs, one JSON object per line
        predictions.jsonl   test predictions, one per example
        model/              the trained model (safetensors + tokenizer + config)
        checkpoints/        resumable training state (removed when the run finishes)
        results.json        written last: its presence means the run finished
        failure.json        written instead when the run raised: the error, its type, where, when
    runs/<recipe>/<task>-<model>-seed<k>@<settings hash>/
                            a run made with other settings than the recipe names now, moved aside (never
                            overwritten); it moves back when the recipe names its settings again
"""

from __future__ import annotations

import fcntl
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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over the target: readers see the old
    file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; run folders are for sharing
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


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


def run_status(folder: Path) -> str:
    """What happened to a run, read from its folder alone (what any launcher needs): "finished" (results.json),
    "failed" (failure.json: the run raised), "interrupted" (started, not finished: it resumes from its
    checkpoints when run again) or "not started"."""
    folder = Path(folder)
    if is_finished(folder):
        return "finished"
    if (folder / "failure.json").exists():
        return "failed"
    if (folder / "recipe.yaml").exists():
        return "interrupted"
    return "not started"


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

    def position(self) -> int:
        """Bytes written so far: a checkpoint records it so a resumed run can drop what came after."""
        return self.path.stat().st_size if self.enabled and self.path.exists() else 0

    def truncate(self, position: int = 0) -> None:
        """Drop everything logged after ``position`` (a resumed run logs those steps again)."""
        if self.enabled and self.path.exists():
            os.truncate(self.path, position)


class RunLocked(NlpkitError):
    """Another process is working in this run folder."""


@contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """One process per run folder (``--jobs``, or two ``nlpkit run`` at once), or :class:`RunLocked`.

    The lock is an OS lock (flock) on ``<folder>/.lock``, which names its owner (host:pid) for the message.
    The OS drops it when its process dies, however it dies, so a lock left by a killed run is stale by
    construction and simply taken over: no pid guessing, no race between two processes taking it over."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".lock"
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.read(fd, 200).decode(errors="replace").strip()
            os.close(fd)
            raise RunLocked(f"Run folder {folder} is in use by process {owner or '?'}") from None
        try:  # a holder that let go between our open and flock deleted the file: lock the current one
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{socket.gethostname()}:{os.getpid()}".encode())
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still holding it (see the inode check above)
        os.close(fd)
