"""The comparison table written at the end of ``nlpkit run``: one row per task x model, mean ± std over seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from nlpkit.runs import atomic_write_text

SPEED = ["train_examples_per_s", "train_tokens_per_s", "train_seconds"]


def load_results(folders: list[Path]) -> pd.DataFrame:
    rows = []
    for folder in folders:
        path = Path(folder) / "results.json"
        if path.exists():
            res = json.loads(path.read_text())
            rows.append({"task": res["task"], "dataset": res["dataset"], "model": res["model"], "seed": res["seed"],
                         **{k: v for k, v in res["test"].items() if isinstance(v, (int, float))},
                         **{k: res[k] for k in SPEED if k in res}, "device": res.get("device"),
                         "precision": res.get("precision")})
    return pd.DataFrame(rows)


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """mean ± std (over seeds) of every numeric column, one row per task x model, in recipe order."""
    numeric = [c for c in df.columns if c not in ("task", "dataset", "model", "seed", "device", "precision")
               and pd.api.types.is_numeric_dtype(df[c])]
    grouped = df.groupby(["task", "model"], sort=False)
    out = grouped[numeric].agg(["mean", "std"])
    table = pd.DataFrame(index=out.index)
    table["seeds"] = grouped.size()
    for col in numeric:
        mean, std = out[(col, "mean")], out[(col, "std")].fillna(0.0)
        digits = 1 if col in SPEED else 4
        table[col] = [f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in zip(mean, std)]
    return table.reset_index()


def write_summary(folders: list[Path], out: Path) -> Path:
    df = load_results(folders)
    out = Path(out)
    if df.empty:
        return out
    table = summary_table(df)
    atomic_write_text(out / "summary.csv", table.to_csv(index=False))
    devices = ", ".join(sorted({f"{d} [{p}]" for d, p in zip(df["device"], df["precision"])}))
    md = f"# {out.name}\n\nTest metrics, mean ± std over seeds. Measured on: {devices}.\n\n"
    atomic_write_text(out / "summary.md", md + table.to_markdown(index=False) + "\n")
    return out / "summary.md"
