"""Writing files so that a crash never leaves half of one (temp file, fsync, rename), and the one place an
OSError from writing becomes a clear :class:`DiskError`. The bottom layer: every other layer writes through it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from nlpkit.errors import NlpkitError


class DiskError(NlpkitError):
    """A file nlpkit had to write could not be written (full disk, read-only or forbidden folder, ...)."""


_WHY = {
    errno.ENOSPC: "the disk is full: free some space",
    errno.EDQUOT: "the disk quota is used up: free some space",
    errno.EROFS: "the file system is read-only: choose another output folder",
    errno.EACCES: "permission denied: make the folder writable or choose another output folder",
    errno.EPERM: "permission denied: make the folder writable or choose another output folder",
    errno.ENOTDIR: "a part of that path is a file, not a folder: choose another output folder",
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
