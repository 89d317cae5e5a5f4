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

import errno
import fcntl
import json
import logging
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from nlpkit.errors import NlpkitError

log = logging.getLogger("nlpkit.runs")


class DiskError(NlpkitError):
    """A file nlpkit had to write could not be written (full disk, read-only or forbidden folder, ...)."""


_WHY = {
    errno.ENOSPC: "the disk is full: free some space",
    errno.EDQUOT: "the disk quota is used up: free some space",
    errno.EROFS: "the file system is read-only: choose another output folder",
    errno.EACCES: "permission denied: make the folder writable or choose another output folder",
    errno.EPERM: "permission denied: make the folder writable or choose another output folder",
}


@contextmanager
def disk_errors(path: Path, what: str = "write") -> Iterator[None]:
    """The one place an OSError from writing run folders, checkpoints, logs and reports becomes a clear
    error: what could not be written, where, why, and that nothing finished was harmed (every file is
    written to a temp file and renamed over its target, results.json last, so a finished run is whole)."""
    try:
        yield
    except DiskError:
        raise
    except OSError as err:
        raise disk_error(err, path, what) from err
    except Exception as err:  # libraries that write in other languages report the OS error in their message
        code = re.search(r"\(os error (\d+)\)", str(err))  # e.g. safetensors' "(os error 28)"
        if code is None:
            raise
        raise disk_error(OSError(int(code.group(1)), os.strerror(int(code.group(1)))), path, what) from err


def disk_error(err: OSError, path: Path, what: str = "write") -> DiskError:
    """``err`` said as :func:`disk_errors` says it (also the CLI's last resort for an OSError). The target
    ``path`` is named, not the temp file the OS may have named."""
    where = path
    why = _WHY.get(err.errno, err.strerror or str(err))
    code = errno.errorcode.get(err.errno, "") if err.errno else ""
    return DiskError(
        f"Could not {what} {where}: {why}{f' ({code})' if code else ''}. Nothing finished was harmed: files are "
        "replaced only once completely written; run the recipe again when this is fixed (an unfinished run "
        "resumes from its last checkpoint)."
    )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over the target: readers see the old
    file or the new one, never half of one."""
    path = Path(path)
    with disk_errors(path):
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


def results_problem(path: Path) -> str | None:
    """None when ``path`` (a results.json) is a finished run's results: a JSON object whose "test" holds at
    least one number; otherwise what is wrong with it (empty, not JSON, wrong shape, unreadable)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return "missing"
    except (OSError, UnicodeDecodeError) as err:
        return f"unreadable ({err})"
    if not text.strip():
        return "empty"
    try:
        results = json.loads(text)
    except ValueError as err:
        return f"not JSON ({err})"
    if not isinstance(results, dict):
        return f"a JSON {type(results).__name__}, not an object"
    test = results.get("test")
    if not isinstance(test, dict) or not any(isinstance(v, (int, float)) and not isinstance(v, bool)
                                             for v in test.values()):
        return "no test metrics (its 'test' entry holds no numbers)"
    return None


_warned: set[Path] = set()


def is_finished(folder: Path) -> bool:
    """A run is finished when its results.json is whole; a corrupt one (a disk fault, a hand edit) does not
    make the run finished forever: it is said once and the run counts as unfinished, so it runs again."""
    path = Path(folder) / "results.json"
    if not path.exists():
        return False
    problem = results_problem(path)
    if problem and path not in _warned:
        _warned.add(path)
        log.warning("%s is %s: the run is not counted as finished and runs again", path, problem)
    return problem is None


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


class RunLocked(NlpkitError):
    """Another process is working in this run folder."""


@contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """One process per run folder (``--jobs``, or two ``nlpkit run`` at once), or :class:`RunLocked`.

    The lock is an OS lock (flock) on ``<folder>/.lock``, which names its owner (host:pid) for the message.
    The OS drops it when its process dies, however it dies, so a lock left by a killed run is stale by
    construction and simply taken over: no pid guessing, no race between two processes taking it over."""
    folder = Path(folder)
    lock = folder / ".lock"
    with disk_errors(lock, "create"):
        folder.mkdir(parents=True, exist_ok=True)
    while True:
        with disk_errors(lock, "create"):
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
