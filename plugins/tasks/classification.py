"""``classification``: one label per text. Accuracy and macro-F1 (scikit-learn), confusion matrix."""

from __future__ import annotations

from typing import Any

from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

import nlpkit
from nlpkit.contract import Task, TaskSpec
from nlpkit.errors import NlpkitError


class Classification(Task):
    name = "classification"
    kind = "classification"
    main_metric = "accuracy"

    def prepare(self, splits: dict[str, list[dict]], labels: list[str] | None = None) -> dict[str, list[dict]]:
        seen = list(dict.fromkeys(str(r["label"]) for r in splits["train"]))
        names = [n for n in labels if n in seen] if labels else sorted(seen)
        names += [n for n in seen if n not in names]
        self.spec = TaskSpec(kind=self.kind, labels=names)
        index = {n: i for i, n in enumerate(names)}
        out: dict[str, list[dict]] = {}
        for split, records in splits.items():
            examples = []
            for n, r in enumerate(records):
                label = str(r["label"])
                if label not in index:
                    where = r.get("where", f"{split} example {n + 1}")
                    raise NlpkitError(f"{where}: label '{label}' never occurs in the training split "
                                      f"(training labels: {', '.join(names)})")
                examples.append({"text": r["text"], "label": index[label]})
            out[split] = examples
        return out

    def metrics(self, examples: list[dict], predictions: list[dict]) -> dict[str, Any]:
        gold = [ex["label"] for ex in examples]
        pred = [p["prediction"] for p in predictions]
        labels = list(range(len(self.spec.labels)))
        return {
            "accuracy": float(accuracy_score(gold, pred)),
            "macro_f1": float(f1_score(gold, pred, average="macro", labels=labels, zero_division=0)),
            "details": {"labels": self.spec.labels,
                        "confusion_matrix": confusion_matrix(gold, pred, labels=labels).tolist()},
        }

    def record(self, index: int, example: dict, prediction: dict) -> dict:
        row = {"index": index, "text": example["text"], "label": self.spec.labels[example["label"]],
               "prediction": self.spec.labels[prediction["prediction"]]}
        return row | {k: v for k, v in prediction.items() if k != "prediction"}

    def parse(self, text: str) -> dict:
        return {"text": text}

    def render(self, example: dict, prediction: dict) -> str:
        label = self.spec.labels[prediction["prediction"]]
        prob = prediction.get("probability")
        return f"{label}" + (f" (p={prob:.3f})" if prob is not None else "")


@nlpkit.hookimpl
def register_tasks(register):
    register(Classification)
