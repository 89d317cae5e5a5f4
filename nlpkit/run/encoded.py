"""Encoded data cached on disk, once per (dataset files, task, subset, model's tokenizer, model options), so the
runs and sweep trials of a study reuse it instead of tokenising the same examples again (100 trials of one model:
one encoding of the validation and test splits, and of the training split when the trials' subsets agree).

Opt in with ``NLPKIT_ENCODED_CACHE=<folder>`` (a folder every node sees on a cluster). An entry's name is a hash of
everything its features depend on: the data (the files' sha256, or the generating options), the task entry, which
examples were taken (max_*_examples, subset, the seed where it samples the training split), the model plugin, its
class and options, and the files of the run's initial model other than its weights (its vocabulary or tokenizer,
its config): a model fitted to another vocabulary never meets features encoded with this one. Entries are written
atomically (a file is whole or absent), so runs on several nodes may fill the cache at once.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nlpkit.files import atomic_write_bytes

log = logging.getLogger("nlpkit.run.encoded")
WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def cache_folder() -> Path | None:
    folder = os.environ.get("NLPKIT_ENCODED_CACHE", "").strip()
    return Path(folder).expanduser() if folder else None


def model_files_digest(saved: Path) -> str:
    """sha256 over the initial model's files but its weights: its vocabulary or tokenizer and its config."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(saved).rglob("*") if p.is_file() and not p.name.endswith(WEIGHTS)):
        digest.update(str(path.relative_to(saved)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_key(split: str, identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps({"split": split, **identity}, sort_keys=True, default=str).encode()).hexdigest()


def encode_splits(encode: Callable[[dict], Any], splits: dict[str, list[dict]], identities: dict[str, dict[str, Any]],
                  write: bool) -> dict[str, list[Any]]:
    """``encode`` applied to every example of each split, or the features cached under the split's identity
    (``identities[split]``); ``write``: store what was encoded (the main process). Without a cache folder, just
    encodes."""
    folder = cache_folder()
    out: dict[str, list[Any]] = {}
    for split, examples in splits.items():
        path = folder / f"{cache_key(split, identities[split])[:32]}.pt" if folder else None
        if path is not None and path.exists():
            try:
                cached = torch.load(path, weights_only=False)
                if isinstance(cached, list) and len(cached) == len(examples):
                    out[split] = cached
                    log.info("encoded %s split read from %s", split, path)
                    continue
            except Exception as err:  # noqa: BLE001 - a bad entry is encoded again and replaced
                log.warning("encoded cache entry %s unreadable (%r): encoding again", path, err)
        out[split] = [encode(ex) for ex in examples]
        if path is not None and write:
            buffer = io.BytesIO()
            torch.save(out[split], buffer)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, buffer.getvalue())
    return out
