"""Resumable training state: written every N steps and when the run is asked to stop, read back by a re-run.

    checkpoints/step-00000300.pt     torch.save of tensors, numbers, strings, lists and dicts only
    checkpoints/step-00000300.json   {"step": 300, "sha256": ..., "bytes": ...}: written after the .pt

The .pt is read with ``torch.load(weights_only=True)``, so a checkpoint holds no pickled objects and
cannot run code. Both files are written atomically (temp file + rename); a .pt without its .json was cut
off before it was complete, and one whose sha256 differs from the .json (truncated, overwritten, bit rot)
is skipped with a warning in favour of the one before. Only the last ``keep`` checkpoints are kept.

Also here: the RNG states a resumed run must restore to draw the same dropout masks, and
:class:`StopRequest`, which turns SIGTERM/SIGINT into "checkpoint at the next step, then exit".
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
import re
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nlpkit.errors import NlpkitError
from nlpkit.files import atomic_write_bytes, atomic_write_text

log = logging.getLogger("nlpkit.train.checkpoint")
NAME = re.compile(r"step-(\d+)\.json$")


class CorruptCheckpoint(Exception):
    """A checkpoint file that is missing, truncated or does not match its checksum."""


class Interrupted(NlpkitError):
    """Training stopped on a signal after writing a checkpoint; the exit code says which signal (128 + n)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum, self.exit_code = signum, 128 + signum

    def __reduce__(self):  # crosses process boundaries intact (``--jobs`` workers)
        return Interrupted, (str(self), self.signum)


# --- files ------------------------------------------------------------------------------------


def save(folder: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` as the checkpoint of ``step`` and delete all but the newest ``keep`` checkpoints."""
    folder = Path(folder)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    path = folder / f"step-{step:08d}.pt"
    atomic_write_bytes(path, data)
    manifest = {"step": step, "file": path.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    atomic_write_text(path.with_suffix(".json"), json.dumps(manifest) + "\n")
    for old in manifests(folder)[max(1, keep):]:
        old.with_suffix(".pt").unlink(missing_ok=True)
        old.unlink(missing_ok=True)
    return path


def manifests(folder: Path) -> list[Path]:
    """The checkpoints' .json files, newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def _verified(manifest: Path) -> bytes:
    """The bytes of the .pt under ``manifest`` after checking the manifest's shape, the size and the sha256."""
    try:
        meta = json.loads(Path(manifest).read_text(encoding="utf-8"))
        if not (isinstance(meta, dict) and isinstance(meta.get("bytes"), int) and isinstance(meta.get("sha256"), str)):
            raise ValueError("not a checkpoint manifest ({\"bytes\": int, \"sha256\": str, ...})")
        data = Path(manifest).with_suffix(".pt").read_bytes()
    except (OSError, ValueError) as err:
        raise CorruptCheckpoint(f"{manifest}: unreadable ({err})") from err
    if len(data) != meta["bytes"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise CorruptCheckpoint(f"{manifest.with_suffix('.pt')}: {len(data)} bytes that do not match their checksum")
    return data


def read(manifest: Path) -> dict[str, Any]:
    """The state saved under ``manifest``, after checking its size and sha256."""
    data = _verified(manifest)
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as err:  # e.g. pickled objects, which weights_only refuses to build
        raise CorruptCheckpoint(f"{manifest.with_suffix('.pt')}: not a plain-data checkpoint ({err})") from err


def latest(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest intact checkpoint (manifest, state); corrupt ones are skipped with a warning."""
    for manifest in manifests(folder):
        try:
            return manifest, read(manifest)
        except CorruptCheckpoint as err:
            log.warning("Checkpoint skipped: %s; using the one before it", err)
    return None


def latest_step(folder: Path) -> int | None:
    """The step a run will resume from: that of the newest checkpoint whose files are whole (manifest of the
    right shape, size and sha256 matching), as :func:`latest` will pick it; quietly, since ``latest`` warns."""
    for manifest in manifests(folder):
        try:
            _verified(manifest)
        except CorruptCheckpoint:
            continue
        return int(NAME.match(manifest.name).group(1))
    return None


def load_initial(model_cls: type, saved: Path) -> Any:
    """The run's saved initial model (``checkpoints/model``), or None when it cannot be loaded: then the
    checkpoints, whose weights belong to its vocabulary, are useless too, so the folder is cleared (with a
    warning) and the run starts over cleanly."""
    try:
        return model_cls.load(saved)
    except Exception as err:  # any plugin's loader: truncated weights, bad JSON, missing files
        log.warning("The saved initial model %s cannot be loaded (%s: %s); its checkpoints belong to it, so the "
                    "run starts over", saved, type(err).__name__, err)
        clear(Path(saved).parent)
        return None


def clear(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


# --- random number generators -----------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """This process's Python, NumPy, torch and CUDA generator states, in weights_only-loadable types."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- stopping on a signal ---------------------------------------------------------------------


class StopRequest:
    """While active, SIGTERM and SIGINT only set ``signum``; the loop checkpoints at the next optimizer
    step and exits. A second Ctrl-C interrupts at once. Signals can only be caught on the main thread;
    elsewhere this does nothing."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def agreed(self, world: int, device: torch.device) -> int:
        """The signal any process received: under DDP all processes must stop at the same step, or the
        ones still training would wait forever on a gradient all-reduce."""
        if world == 1:
            return self.signum
        flag = torch.tensor([self.signum], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item())
