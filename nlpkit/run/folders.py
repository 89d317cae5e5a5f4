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
import socket
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from nlpkit.config.recipe import RunSpec, settings_hash
from nlpkit.errors import NlpkitError
from nlpkit.files import disk_error, disk_errors, write_json
from nlpkit.train.options import TrainOptions

log = logging.getLogger("nlpkit.run.folders")


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
    if results.get("test_split") == "skipped":  # a sweep trial: scored on validation, the test split never read
        validation = results.get("validation")
        if isinstance(validation, dict) and any(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                for v in validation.values()):
            return None
        return "no validation metrics (a run that skipped the test split is scored on validation only)"
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


def check_creatable(folder: Path) -> None:
    """Raise the :class:`DiskError` writing into ``folder`` would raise, before a run starts: its nearest
    existing ancestor must be a writable folder. An output or report folder below a plain file, on a read-only
    file system or in a forbidden place is then said at once, not after training (or, for a run folder that
    cannot be made, without a failure.json to hold the error). Creates nothing."""
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise disk_error(OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)), Path(folder), "create")
    if not os.access(existing, os.W_OK | os.X_OK):  # False on a read-only file system, even for root
        code = errno.EROFS if _read_only_mount(existing) else errno.EACCES
        raise disk_error(OSError(code, os.strerror(code)), Path(folder), "create")


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


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


def failure_of(folder: Path) -> str | None:
    """The error a failed run recorded in its failure.json ("Type: message"), or None when it holds none."""
    path = Path(folder) / "failure.json"
    if not path.exists():
        return None
    try:
        failure = json.loads(path.read_text(encoding="utf-8"))
        return f"{failure.get('type', 'Error')}: {failure.get('error', '')}"
    except (OSError, ValueError, AttributeError) as err:
        return f"failure.json unreadable ({err})"


class RunLocked(NlpkitError):
    """Another process is working in this run folder."""


class NoLocks(NlpkitError):
    """The run folder's file system refuses locks (NFS without a lock daemon, Lustre mounted without flock)."""

    def __init__(self, folder: Path, err: OSError):
        name = errno.errorcode.get(err.errno or 0, str(err.errno))
        super().__init__(
            f"Run folder {folder}: its file system does not support file locks (flock failed with {name}: "
            f"{err.strerror}), so nlpkit cannot keep two processes from writing one run. Put output: on a file "
            "system with locks (NFS: with its lock service, lockd/rpc.statd; Lustre: mounted with -o flock; "
            "BeeGFS: tuneUseGlobalFileLocks), or on a local disk")


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
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise NoLocks(folder, err) from None
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


def write_failure(folder: Path, err: BaseException | str, kind: str | None = None) -> None:
    """Record in the run folder why a run failed: ``failure.json`` (error, type, traceback tail, time)."""
    if isinstance(err, BaseException):
        text, kind = str(err) or type(err).__name__, type(err).__name__
        tail = "".join(traceback.format_exception(type(err), err, err.__traceback__)[-6:])[-4000:]
    else:
        text, tail = err, ""
    write_json(Path(folder) / "failure.json", {"error": text, "type": kind or "Error", "traceback": tail,
                                                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def saved_settings_hash(folder: Path) -> str | None:
    """The settings hash of the run a folder holds (from its recipe.yaml), or None when it holds none.
    Training options are re-read through the schema first, so a training key added to nlpkit since the run
    was made counts with its default rather than as a change."""
    saved = Path(folder) / "recipe.yaml"
    if not saved.exists():
        return None
    try:
        resolved = yaml.safe_load(saved.read_text(encoding="utf-8"))
        resolved.pop("settings_hash", None)
        resolved["train"] = TrainOptions.model_validate(resolved.get("train") or {}).model_dump()
    except (yaml.YAMLError, ValidationError, AttributeError, TypeError):
        return "unreadable"
    return settings_hash(resolved)


def set_aside(folder: Path, old_hash: str) -> Path:
    """Move a run folder to ``<folder>@<old_hash>`` beside it (``@<old_hash>-2`` ... when that is taken): the
    run made with other settings is kept, never overwritten or deleted, and its name says which settings."""
    folder = Path(folder)
    with run_lock(folder):  # not while another process is working in it
        for n in range(1, 1000):
            target = folder.with_name(f"{folder.name}@{old_hash}" + (f"-{n}" if n > 1 else ""))
            try:
                target.mkdir()  # claims the name atomically; renaming a folder onto an empty one replaces it
            except FileExistsError:
                continue
            os.rename(folder, target)
            break
        else:
            raise NlpkitError(f"{folder}: no free name to move the run with other settings aside to")
    (target / ".lock").unlink(missing_ok=True)
    return target


def set_aside_changed(runs: list[RunSpec], say: Any) -> None:
    """A run folder holds the configuration the recipe names now: a run in it (finished, failed or
    interrupted) made with other settings moves aside, so it is neither reused nor resumed nor overwritten;
    a run of the recipe's settings that was set aside earlier (``<name>@<hash>``) moves back and is reused."""
    for spec in runs:
        now = spec.settings_hash
        before = saved_settings_hash(spec.folder)
        if before is not None and before != now:
            status = run_status(spec.folder)
            target = set_aside(spec.folder, before)
            say(f"{spec.name}: the {status} run there was made with other settings ({before}, now {now}); "
                f"moved it to {target}")
        earlier = spec.folder.with_name(f"{spec.folder.name}@{now}")
        if not spec.folder.exists() and earlier.is_dir() and saved_settings_hash(earlier) == now:
            with run_lock(earlier):
                os.rename(earlier, spec.folder)
            (spec.folder / ".lock").unlink(missing_ok=True)
            say(f"{spec.name}: the {run_status(spec.folder)} run made with these settings ({now}) is back from "
                f"{earlier}")
