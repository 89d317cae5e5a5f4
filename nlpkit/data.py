"""Where data lives and how to open it. Dataset plugins use these helpers; nothing here knows a task.

A dataset's local folder is the recipe's ``data_dir`` or ``$NLPKIT_DATA/<dataset name>``.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import IO

from nlpkit.errors import NlpkitError


def data_dir(dataset: str, explicit: str | Path | None = None) -> Path | None:
    """The local folder for ``dataset``: the explicit path if given, else $NLPKIT_DATA/<dataset>, else None."""
    if explicit:
        if "$NLPKIT_DATA" in str(explicit) and not os.environ.get("NLPKIT_DATA"):
            raise NlpkitError(f"data_dir '{explicit}' uses $NLPKIT_DATA, which is not set: "
                              "set it to the folder that holds your datasets")
        path = Path(os.path.expandvars(str(explicit))).expanduser()
        if not path.exists():
            raise NlpkitError(f"Data folder for '{dataset}' not found: {path}")
        return path
    root = os.environ.get("NLPKIT_DATA")
    if root and (Path(root).expanduser() / dataset).exists():
        return Path(root).expanduser() / dataset
    return None


def find_file(folder: Path, stem: str) -> Path | None:
    """``stem`` or ``stem.gz`` inside ``folder``."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def open_text(path: str | Path) -> IO[str]:
    """Open a UTF-8 text file, gzip-compressed or not (decided by its magic bytes, not its name)."""
    path = Path(path)
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", encoding="utf-8", newline="") if gz else open(path, encoding="utf-8", newline="")


def hub_unavailable(dataset: str, hub_id: str, err: Exception) -> NlpkitError:
    return NlpkitError(
        f"Could not load '{hub_id}' from the Hugging Face hub for dataset '{dataset}' ({type(err).__name__}: {err}).\n"
        f"Offline? Point nlpkit at a local copy: set NLPKIT_DATA to a folder containing '{dataset}/', "
        f"or give 'data_dir' in the recipe's task entry."
    )
