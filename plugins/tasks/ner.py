"""``ner``: named-entity recognition as token classification: one tag per word.

Datasets hand over tags as strings in IOB1 (CoNLL-2003's original), IOB2/BIO or BIOES; they are all
normalised to IOB2, the scheme seqeval's strict mode scores. The label set is O plus B-/I- of every entity
type in the training split, so a type seen only in validation/test is an error naming its file and line.
Scoring is seqeval's entity-level micro precision/recall/F1 (strict, IOB2), per-type F1 and token accuracy.
"""

from __future__ import annotations

import re
from typing import Any

from seqeval.metrics import classification_report
from seqeval.scheme import IOB2

import nlpkit
from nlpkit.contract import Task, TaskSpec
from nlpkit.errors import NlpkitError

PREFIXES = ("B", "I", "E", "S")


def to_iob2(tags: list[str], where: str = "") -> list[str]:
    """IOB1, IOB2 or BIOES tags -> IOB2. One rule covers all three: S-/E- become B-/I-, then every I-X that
    does not continue an X entity starts one (B-X). IOB1's B-X (an entity right after one of the same type)
    stays B-X; already-valid IOB2 is unchanged."""
    out: list[str] = []
    prev_type = None
    for i, tag in enumerate(tags):
        if tag == "O":
            out.append("O")
            prev_type = None
            continue
        prefix, _, kind = tag.partition("-")
        if prefix not in PREFIXES or not kind:
            raise NlpkitError(f"{line_of(where, i)}: tag '{tag}' is not O or B-/I-/E-/S-<type> "
                              "(IOB1, IOB2/BIO or BIOES)")
        prefix = {"S": "B", "E": "I"}.get(prefix, prefix)
        if prefix == "I" and prev_type != kind:
            prefix = "B"
        out.append(f"{prefix}-{kind}")
        prev_type = kind if tag[0] not in "ES" else None  # E-/S- close their entity
    return out


def line_of(where: str, offset: int) -> str:
    """'file, line N' of a sentence -> 'file, line N+offset' (one token per line); other places unchanged."""
    m = re.fullmatch(r"(.*), line (\d+)", where)
    return f"{m.group(1)}, line {int(m.group(2)) + offset}" if m else f"{where}, token {offset + 1}"


def entities(tags: list[str]) -> list[tuple[int, int, str]]:
    """(start, end exclusive, type) of each entity in IOB2 tags; a stray I-X (invalid IOB2) is not one (strict)."""
    spans, start, kind = [], None, None
    for i, tag in enumerate([*tags, "O"]):
        if start is not None and not (tag.startswith("I-") and tag[2:] == kind):
            spans.append((start, i, kind))
            start = None
        if tag.startswith("B-"):
            start, kind = i, tag[2:]
    return spans


def split_words(text: str) -> list[str]:
    """Whitespace words with trailing punctuation split off ('Paris.' -> 'Paris', '.'), as CoNLL tokenises;
    abbreviations with an inner period ('U.S.') keep theirs."""
    words: list[str] = []
    for word in text.split():
        tail: list[str] = []
        while len(word) > 1 and word[-1] in ".,;:!?)\"'" and not (word[-1] == "." and "." in word[:-1]):
            tail.insert(0, word[-1])
            word = word[:-1]
        lead = []
        while len(word) > 1 and word[0] in "(\"'":
            lead.append(word[0])
            word = word[1:]
        words += [*lead, word, *tail]
    return words


class NER(Task):
    name = "ner"
    kind = "tagging"
    main_metric = "f1"

    def prepare(self, splits: dict[str, list[dict]], labels: list[str] | None = None) -> dict[str, list[dict]]:
        normalised = {split: [(r, to_iob2(r["tags"], r.get("where", f"{split} sentence {n + 1}")))
                              for n, r in enumerate(records)] for split, records in splits.items()}
        types = list(dict.fromkeys(t[2:] for _, tags in normalised["train"] for t in tags if t != "O"))
        known = [n[2:] for n in labels or [] if n[:2] in ("B-", "I-")]
        order = [t for t in dict.fromkeys(known) if t in types] + sorted(t for t in types if t not in known)
        names = ["O"] + [f"{p}-{t}" for t in order for p in ("B", "I")]
        self.spec = TaskSpec(kind=self.kind, labels=names)
        index = {n: i for i, n in enumerate(names)}
        out: dict[str, list[dict]] = {}
        for split, pairs in normalised.items():
            examples = []
            for n, (r, tags) in enumerate(pairs):
                if len(r["tokens"]) != len(tags):
                    raise NlpkitError(f"{r.get('where', f'{split} sentence {n + 1}')}: {len(r['tokens'])} tokens "
                                      f"but {len(tags)} tags")
                for i, tag in enumerate(tags):
                    if tag not in index:
                        where = line_of(r.get("where", f"{split} sentence {n + 1}"), i)
                        raise NlpkitError(f"{where}: tag '{r['tags'][i]}' (entity type '{tag[2:]}') never occurs in "
                                          f"the training split (training types: {', '.join(order) or 'none'})")
                examples.append({"tokens": list(r["tokens"]), "tags": [index[t] for t in tags]})
            out[split] = examples
        return out

    def names(self, ids: list[int]) -> list[str]:
        return [self.spec.labels[i] for i in ids]

    def metrics(self, examples: list[dict], predictions: list[dict]) -> dict[str, Any]:
        gold = [self.names(ex["tags"]) for ex in examples]
        pred = [self.names(p["prediction"]) for p in predictions]
        for g, p, ex in zip(gold, pred, examples):
            if len(g) != len(p):
                raise NlpkitError(f"the model predicted {len(p)} tags for a {len(g)}-word sentence: {ex['tokens']}")
        report = classification_report(gold, pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
        micro = report["micro avg"]
        words = sum(len(g) for g in gold)
        correct = sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p))
        types = [n[2:] for n in self.spec.labels if n.startswith("B-")]
        per_type = {t: {k: float(report[t][k]) if t in report else 0.0 for k in ("precision", "recall", "f1-score")}
                    | {"support": int(report[t]["support"]) if t in report else 0} for t in types}
        return {
            "f1": float(micro["f1-score"]),
            "precision": float(micro["precision"]),
            "recall": float(micro["recall"]),
            "token_accuracy": correct / max(words, 1),
            **{f"f1_{t}": v["f1-score"] for t, v in per_type.items()},
            "details": {"per_type": {t: {"precision": v["precision"], "recall": v["recall"], "f1": v["f1-score"],
                                         "support": v["support"]} for t, v in per_type.items()}},
        }

    def record(self, index: int, example: dict, prediction: dict) -> dict:
        return {"index": index, "tokens": example["tokens"], "gold": self.names(example["tags"]),
                "prediction": self.names(prediction["prediction"])}

    def parse(self, text: str) -> dict:
        return {"tokens": split_words(text)}

    def render(self, example: dict, prediction: dict) -> str:
        spans = entities(self.names(prediction["prediction"]))
        if not spans:
            return "(no entities)"
        return "; ".join(f"{' '.join(example['tokens'][s:e])} ({kind})" for s, e, kind in spans)


@nlpkit.hookimpl
def register_tasks(register):
    register(NER)
