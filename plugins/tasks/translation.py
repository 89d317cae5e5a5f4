"""``translation``: sequence to sequence, (source, target) text pairs. Scored with sacreBLEU corpus BLEU
(default 13a tokenization) and chrF on detokenized output, as sacreBLEU itself computes them, so figures
compare with published ones. A record may carry several references (``references``: every reference, the
``target`` first); the test split is then scored against all of them (sacreBLEU's reference streams).
``details`` holds BLEU per source-length bucket: attention's gain over a plain encoder-decoder shows most on
long sentences.
"""

from __future__ import annotations

from typing import Any

import sacrebleu

import nlpkit
from nlpkit.contract import Options, Task, TaskSpec
from nlpkit.errors import NlpkitError

ATTENTION_RECORDS = 20  # test sentences whose attention matrices go into predictions.jsonl (heatmaps)


class TranslationOptions(Options):
    length_buckets: list[int] = [10, 15, 20]  # upper edges (source words) of the BLEU-by-length buckets


def normalize(text: str) -> str:
    """One space between words: the files' stray double spaces are not part of the translation."""
    return " ".join(str(text).split())


def length_buckets(edges: list[int]) -> list[tuple[int, float, str]]:
    """(low, high, label) per bucket, e.g. 1-10, 11-15, 16-20, 21+."""
    out, low = [], 1
    for high in sorted(edges):
        out.append((low, high, f"{low}-{high}"))
        low = high + 1
    return out + [(low, float("inf"), f"{low}+")]


def streams(references: list[list[str]]) -> list[list[str | None]]:
    """Per-sentence reference lists as sacreBLEU's reference streams (stream k: every sentence's k-th reference;
    None where a sentence has fewer, which sacreBLEU skips)."""
    most = max((len(r) for r in references), default=1)
    return [[r[k] if k < len(r) else None for r in references] for k in range(most)]


class Translation(Task):
    name = "translation"
    kind = "seq2seq"
    main_metric = "bleu"
    Options = TranslationOptions

    def prepare(self, splits: dict[str, list[dict]], labels: list[str] | None = None) -> dict[str, list[dict]]:
        self.spec = TaskSpec(kind=self.kind)
        out: dict[str, list[dict]] = {}
        for split, records in splits.items():
            examples = []
            for n, r in enumerate(records):
                where = r.get("where", f"{split} example {n + 1}")
                if "source" not in r or "target" not in r:
                    raise NlpkitError(f"{where}: a translation record needs 'source' and 'target' (got {list(r)})")
                source, target = normalize(r["source"]), normalize(r["target"])
                if not source or not target:
                    raise NlpkitError(f"{where}: empty {'source' if not source else 'target'} text")
                example = {"source": source, "target": target}
                references = [normalize(ref) for ref in r.get("references") or [] if normalize(ref)]
                if len(references) > 1:
                    example["references"] = references
                examples.append(example)
            out[split] = examples
        return out

    def metrics(self, examples: list[dict], predictions: list[dict]) -> dict[str, Any]:
        hyps = [p["prediction"] for p in predictions]
        refs = [ex.get("references") or [ex["target"]] for ex in examples]
        by_length = []
        for low, high, label in length_buckets(self.options.length_buckets):
            idx = [i for i, ex in enumerate(examples) if low <= len(ex["source"].split()) <= high]
            if idx:
                bleu = sacrebleu.corpus_bleu([hyps[i] for i in idx], streams([refs[i] for i in idx])).score
                by_length.append({"source_words": label, "sentences": len(idx), "bleu": round(bleu, 2)})
        most = max((len(r) for r in refs), default=1)
        return {
            "bleu": sacrebleu.corpus_bleu(hyps, streams(refs)).score,
            "chrf": sacrebleu.corpus_chrf(hyps, streams(refs)).score,
            "details": {"bleu_by_source_length": by_length, "tokenize": "13a", "references": most},
        }

    def record(self, index: int, example: dict, prediction: dict) -> dict:
        row = {"index": index, "source": example["source"], "reference": example.get("target"),
               "hypothesis": prediction["prediction"]}
        if len(example.get("references") or []) > 1:
            row["references"] = example["references"]
        if index < ATTENTION_RECORDS:
            row |= {k: prediction[k] for k in ("attention", "source_tokens", "target_tokens") if k in prediction}
        return row

    def parse(self, text: str) -> dict:
        return {"source": normalize(text)}

    def render(self, example: dict, prediction: dict) -> str:
        return prediction["prediction"]


@nlpkit.hookimpl
def register_tasks(register):
    register(Translation)
