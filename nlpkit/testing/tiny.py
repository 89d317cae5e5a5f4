"""Tiny data in every task kind's shapes (generated here, so no task or dataset plugin is needed), and
installing a plugin package in a test without pip (``install_package``, ``plugins_on_path``)."""

from __future__ import annotations

import importlib
import random
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nlpkit.contract import TASK_KINDS, TaskSpec

# ----------------------------------------------------------------------------------- tiny data

TOPICS = {
    "animal": "cat dog horse mouse tiger eagle whale rabbit".split(),
    "food": "bread cheese apple rice soup pasta honey salad".split(),
    "place": "city river mountain village harbour desert island forest".split(),
}
FILLER = "the a small big old new near with and then".split()
TAGS = ["O", "B-ANIMAL", "B-FOOD", "B-PLACE", "I-PLACE"]
PLACES = [("new", "york"), ("san", "diego"), ("el", "paso"), ("le", "havre")]
LEXICON = {"one": "eins", "two": "zwei", "three": "drei", "four": "vier", "red": "rot", "blue": "blau",
           "house": "haus", "tree": "baum", "dog": "hund", "cat": "katze", "big": "gross", "small": "klein"}


def tiny_records(kind: str, n: int = 24, seed: int = 0) -> list[dict]:
    """Raw records of a task kind, as a dataset plugin returns them (labels and tags as strings)."""
    rng = random.Random(f"{kind}-{seed}")
    out = []
    for _ in range(n):
        if kind == "classification":
            topic = rng.choice(list(TOPICS))
            words = [rng.choice(TOPICS[topic]) if rng.random() < 0.6 else rng.choice(FILLER)
                     for _ in range(rng.randint(4, 8))]
            words[rng.randrange(len(words))] = rng.choice(TOPICS[topic])
            out.append({"text": " ".join(words), "label": topic})
        elif kind == "tagging":
            tokens: list[str] = []
            tags: list[str] = []
            while len(tokens) < rng.randint(4, 9):
                r = rng.random()
                if r < 0.5:
                    tokens.append(rng.choice(FILLER))
                    tags.append("O")
                elif r < 0.7:
                    tokens.append(rng.choice(TOPICS["animal"]))
                    tags.append("B-ANIMAL")
                elif r < 0.85:
                    tokens.append(rng.choice(TOPICS["food"]))
                    tags.append("B-FOOD")
                else:
                    tokens.extend(rng.choice(PLACES))
                    tags.extend(["B-PLACE", "I-PLACE"])
            out.append({"tokens": tokens, "tags": tags})
        elif kind == "seq2seq":
            words = [rng.choice(list(LEXICON)) for _ in range(rng.randint(3, 6))]
            out.append({"source": " ".join(words), "target": " ".join(LEXICON[w] for w in words)})
        else:
            raise ValueError(f"unknown task kind '{kind}' (one of {', '.join(TASK_KINDS)})")
    return out


def label_names(kind: str) -> list[str]:
    return {"classification": list(TOPICS), "tagging": list(TAGS), "seq2seq": []}[kind]


def to_example(kind: str, record: dict, labels: list[str]) -> dict:
    """A raw record as a task would prepare it (label names -> ids), per the shapes in nlpkit.contract."""
    if kind == "classification":
        return {"text": record["text"], "label": labels.index(record["label"])}
    if kind == "tagging":
        return {"tokens": list(record["tokens"]), "tags": [labels.index(t) for t in record["tags"]]}
    return {"source": record["source"], "target": record["target"]}


def tiny_examples(kind: str, n: int = 24, seed: int = 0) -> tuple[TaskSpec, list[dict]]:
    """A task spec and ``n`` prepared examples of ``kind``: what ``Model.create`` receives."""
    labels = label_names(kind)
    return TaskSpec(kind=kind, labels=labels), [to_example(kind, r, labels) for r in tiny_records(kind, n, seed)]


def long_example(kind: str, words: int) -> dict:
    """One example of ``words`` words, to push a model past its longest allowed input."""
    pool = [w for ws in TOPICS.values() for w in ws]
    tokens = [pool[i % len(pool)] for i in range(words)]
    if kind == "classification":
        return {"text": " ".join(tokens), "label": 0}
    if kind == "tagging":
        return {"tokens": tokens, "tags": [0] * words}
    source = [list(LEXICON)[i % len(LEXICON)] for i in range(words)]
    return {"source": " ".join(source), "target": " ".join(LEXICON[w] for w in source)}



# ----------------------------------------------------------------------------------- task checks


def tiny_splits(kind: str) -> dict[str, list[dict]]:
    """Raw train/validation/test records of a kind; validation and test only use labels seen in train."""
    return {"train": tiny_records(kind, 24, 0), "validation": tiny_records(kind, 8, 1),
            "test": tiny_records(kind, 8, 2)}


def gold_predictions(kind: str, examples: list[dict]) -> list[dict]:
    field = {"classification": "label", "tagging": "tags", "seq2seq": "target"}[kind]
    return [{"prediction": ex[field]} for ex in examples]


def wrong_predictions(kind: str, examples: list[dict], labels: list[str]) -> list[dict]:
    if kind == "classification":
        return [{"prediction": (ex["label"] + 1) % len(labels)} for ex in examples]
    if kind == "tagging":
        return [{"prediction": [(t + 1) % len(labels) for t in ex["tags"]]} for ex in examples]
    return [{"prediction": "zzz qqq"} for _ in examples]



# ----------------------------------------------------------------------------------- installing packages in tests


def install_package(package: Path, site: Path) -> Path:
    """Make the plugin package in ``package`` (a folder with pyproject.toml) importable and discoverable from
    ``site``, as ``pip install`` would: copy its modules and write a ``.dist-info`` holding its entry points.

    No network and no build backend, so tests can install a generated plugin in a fresh CI venv in milliseconds.
    Returns the ``.dist-info`` folder."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project.get("version", "0.0.0")
    site.mkdir(parents=True, exist_ok=True)
    tool = tomllib.loads((package / "pyproject.toml").read_text()).get("tool", {}).get("setuptools", {})
    modules = [f"{m}.py" for m in tool.get("py-modules", [])] + [p for p in tool.get("packages", []) if "." not in p]
    if not modules:
        modules = [p.name for p in package.iterdir() if (p.suffix == ".py" or (p / "__init__.py").exists())
                   and p.name not in ("tests", "setup.py", "conftest.py")]
    for module in modules:
        source = package / module
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, site / module)
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    groups = project.get("entry-points", {})
    (info / "entry_points.txt").write_text(
        "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
                for group, eps in groups.items()))
    (info / "top_level.txt").write_text("".join(Path(m).stem + "\n" for m in modules))
    return info


def one_module_plugin(folder: Path, name: str, source: str) -> Path:
    """Write a plugin package of one module ``<name>.py`` holding ``source``, registered as entry point ``name`` of
    the ``nlpkit`` group (distribution ``nlpkit-<name>``), into ``folder``; returns it, ready for
    :func:`install_package`. The shortest way for a test to add a plugin the way a user's package would."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(
        f'[project]\nname = "nlpkit-{name}"\nversion = "0.1.0"\n\n[project.entry-points.nlpkit]\n{name} = "{name}"\n'
        f'\n[tool.setuptools]\npy-modules = ["{name}"]\n')
    (folder / f"{name}.py").write_text(source)
    return folder


@contextmanager
def plugins_on_path(site: Path) -> Iterator[None]:
    """Put ``site`` on sys.path and reload the plugin registry; undo both (and forget its modules) on exit."""
    from nlpkit import plugins

    before = set(sys.modules)
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    plugins.reset()
    try:
        yield
    finally:
        sys.path.remove(str(site))
        for name in set(sys.modules) - before:
            if str(site) in str(getattr(sys.modules[name], "__file__", "") or ""):
                del sys.modules[name]
        importlib.invalidate_caches()
        plugins.reset()
