"""``toy_topics``: a small topic-classification set that nlpkit generates itself (no download, no files).

Sentences mix topic words with filler and a share of words from other topics, so a model has to weigh
the evidence rather than spot one keyword. It makes ``recipes/quickstart.yaml`` run on a fresh offline
machine; it is not a benchmark.
"""

from __future__ import annotations

import random

import nlpkit
from nlpkit.contract import Dataset, Options

TOPICS = {
    "sports": "match team coach goal season league striker referee tournament championship fans stadium "
              "victory defeat player injury transfer playoff medal athlete",
    "business": "market shares profit investors company revenue merger bank prices economy quarter stocks "
                "earnings inflation deal growth trade budget loans exports",
    "science": "researchers study cells planet telescope experiment data species climate energy physics "
               "laboratory genome spacecraft molecule vaccine fossil satellite theory",
    "politics": "election minister parliament vote government party senator president policy campaign "
                "reform law treaty opposition coalition governor diplomats summit protest",
}
FILLER = ("the a this week on in after before with new report said about more than according to local "
          "officials early late today during amid").split()
TEMPLATES = [
    "{f} {t} {f} {t} {o} {f} {t}",
    "{t} {f} {t} {f} {f} {o} {t} {f} {t}",
    "{f} {f} {t} {o} {t} {f} {o} {t}",
    "{t} {t} {f} {f} {t} {o}",
]


class ToyOptions(Options):
    train_size: int = 800
    eval_size: int = 200
    seed: int = 13
    noise: float = 0.25  # chance that a topic slot takes a word of another topic


class ToyTopics(Dataset):
    name = "toy_topics"
    kind = "classification"
    Options = ToyOptions

    def labels(self) -> list[str]:
        return list(TOPICS)

    def load(self, split: str) -> list[dict]:
        size = self.options.train_size if split == "train" else self.options.eval_size
        rng = random.Random(f"{self.options.seed}-{split}")
        words = {t: w.split() for t, w in TOPICS.items()}
        records = []
        for _ in range(size):
            topic = rng.choice(list(TOPICS))
            others = [t for t in TOPICS if t != topic]

            def topical(topic: str = topic, others: list[str] = others) -> str:
                source = rng.choice(others) if rng.random() < self.options.noise else topic
                return rng.choice(words[source])

            text = rng.choice(TEMPLATES)
            while "{" in text:
                text = text.replace("{t}", topical(), 1).replace("{f}", rng.choice(FILLER), 1)
                text = text.replace("{o}", rng.choice(words[rng.choice(others)]), 1)
            records.append({"text": text.capitalize() + ".", "label": topic})
        return records


@nlpkit.hookimpl
def register_datasets(register):
    register(ToyTopics)
