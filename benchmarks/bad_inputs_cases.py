"""The hostile-input corpus of issue #15: ~70 faulty recipes, data files, disk states, plugins and predict calls,
each a :class:`Case` whose ``build`` writes its inputs into a fresh folder and returns the ``nlpkit`` arguments.
``benchmarks/bad_inputs.py`` runs them (against any checkout's ``nlpkit``) and tabulates before/after."""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TIMEOUT_S = 120
BOMB_MEMORY = 3 * 1024**3  # address-space limit for the alias bomb: torch imports in well under this

TINY_MODEL = "{vocab_size: 100, embedding_dim: 8, hidden_size: 8}"
TINY_TAGGER = "{embedding_dim: 8, hidden_size: 8, char_dim: 0}"
TOY_TASK = "{name: classification, dataset: toy_topics, dataset_options: {train_size: 32, eval_size: 8}}"
TRAIN = "{epochs: 1, batch_size: 8, progress: false}"


def recipe(root: Path, name: str = "demo", task: str = TOY_TASK, models: str | None = None,
           train: str = TRAIN, extra: str = "") -> str:
    """A tiny recipe writing under root/out/runs and root/out/reports (the declared output folders)."""
    if models is None:  # a tagger has no subword vocabulary
        models = f"  lstm: {TINY_TAGGER if 'name: ner' in task else TINY_MODEL}\n"
    return (f"name: {name}\ntask: {task}\nmodels:\n{models}train: {train}\nseeds: [1]\n"
            f"output: {root}/out/runs\nreports: {root}/out/reports\n{extra}")


@dataclass
class Case:
    group: str  # the class
    name: str
    build: Callable[[Path, Fixtures], list[str]]  # writes the inputs, returns nlpkit's arguments
    should_fail: bool = True  # False: exit 0 is right (e.g. a corrupt results.json is re-run)
    stdin: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    memory_limit: int | None = None
    outputs: tuple[str, ...] = ("out",)  # folders (relative to the case's root) it may write into
    pick: str | None = None  # show the first output line holding this (e.g. a plugin's name in a listing)


@dataclass
class Result:
    group: str
    name: str
    exit: int | str
    first_line: str
    traceback: bool
    wrote_outside: list[str]
    seconds: float
    should_fail: bool


# --------------------------------------------------------------------------------------------- shared fixtures

class Fixtures:
    """Finished tiny runs (classification, tagging, translation) trained once by the nlpkit under test, copied
    into the cases that need a run folder; and a run killed after its first checkpoint."""

    def __init__(self, nlpkit: Path, root: Path):
        self.nlpkit, self.root = nlpkit, root
        self._runs: dict[str, Path] = {}

    def run(self, kind: str) -> Path:
        if kind not in self._runs:
            self._runs[kind] = self._train(kind)
        return self._runs[kind]

    def copy_run(self, kind: str, root: Path) -> Path:
        source = self.run(kind)
        return Path(shutil.copytree(source, root / "out" / "runs" / "r" / source.name))

    def _train(self, kind: str) -> Path:
        where = self.root / kind
        where.mkdir(parents=True)
        task = {"cls": TOY_TASK, "ner": ner_task(where), "mt": mt_task(where)}[kind]
        (where / "r.yaml").write_text(recipe(where, "fx", task=task))
        done = subprocess.run([str(self.nlpkit), "run", "--no-report", "r.yaml"], cwd=where, capture_output=True,
                              text=True, timeout=600)
        if done.returncode != 0:  # --no-report may not exist in an old checkout
            done = subprocess.run([str(self.nlpkit), "run", "r.yaml"], cwd=where, capture_output=True, text=True,
                                  timeout=600)
        runs = [p.parent for p in (where / "out" / "runs").rglob("results.json")]
        if done.returncode != 0 or not runs:
            raise SystemExit(f"fixture {kind} failed:\n{done.stdout}\n{done.stderr}")
        return runs[0]

    def killed_run(self, root: Path) -> Path:
        """A run SIGKILLed after it wrote a checkpoint manifest: the recipe at root/r.yaml resumes it."""
        (root / "r.yaml").write_text(recipe(root, train="{epochs: 50, batch_size: 8, progress: false, "
                                                       "checkpoint_every: 2}"))
        proc = subprocess.Popen([str(self.nlpkit), "run", "r.yaml"], cwd=root, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 300
        while time.time() < deadline:
            manifests = [p for p in (root / "out").rglob("*.json") if "checkpoint" in str(p.parent)]
            if manifests:
                time.sleep(0.5)
                break
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return root / "r.yaml"


def ner_files(folder: Path) -> None:
    """train.txt, dev.txt and test.txt: validation and test as files, which every version of the loader reads."""
    sentences = "".join(f"Alice{i} B-PER\nvisited O\nParis{i % 3} B-LOC\n. O\n\n" for i in range(12))
    for name in ("train.txt", "dev.txt", "test.txt"):
        (folder / name).write_text(sentences)


def ner_task(folder: Path, options: str = "") -> str:
    ner_files(folder)
    return ("{name: ner, dataset: conll_files, data_dir: " + str(folder) + ", dataset_options: {train: train.txt, "
            "validation: dev.txt, test: test.txt" + options + "}}")


def mt_files(folder: Path, n: int = 16) -> None:
    for split in ("train", "dev", "test"):
        (folder / f"{split}.en").write_text("".join(f"a small house {i}\n" for i in range(n)))
        (folder / f"{split}.de").write_text("".join(f"ein kleines haus {i}\n" for i in range(n)))


def mt_task(folder: Path, options: str = "") -> str:
    mt_files(folder)
    return ("{name: translation, dataset: parallel_files, data_dir: " + str(folder) + ", dataset_options: "
            "{source: en, target: de, train: train, validation: dev, test: test" + options + "}}")


def text_task(folder: Path, train: str, options: str = "") -> str:
    """A text_files task whose validation and test files are whole: only ``train`` is at fault."""
    for name in ("dev.csv", "test.csv"):
        (folder / name).write_text(good_csv(8))
    return ("{name: classification, dataset: text_files, data_dir: " + str(folder) + ", dataset_options: "
            "{train: " + train + ", validation: dev.csv, test: test.csv" + options + "}}")


def good_csv(n: int = 24) -> str:
    return "text,label\n" + "".join(f"word{i} stock market,{'biz' if i % 2 else 'sport'}\n" for i in range(n))


# ------------------------------------------------------------------------------------------------------ cases

def write(root: Path, text: str | bytes, name: str = "r.yaml") -> str:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return name


def run_recipe(text_of: Callable[[Path], str | bytes], *more: str) -> Callable[[Path, Fixtures], list[str]]:
    return lambda root, fx: ["run", write(root, text_of(root)), *more]


def with_train(train: str) -> Callable[[Path, Fixtures], list[str]]:
    return run_recipe(lambda r: recipe(r, train=train))


def with_model(options: str, task: Callable[[Path], str] = lambda r: TOY_TASK) -> Callable[[Path, Fixtures], list[str]]:
    return run_recipe(lambda r: recipe(r, task=task(r), models=f"  lstm: {options}\n"))


def billion_laughs(root: Path) -> str:
    rows = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    rows += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return recipe(root) + "\n".join(rows) + "\n"


def data_case(make: Callable[[Path], str]) -> Callable[[Path, Fixtures], list[str]]:
    """make(data folder) writes the data and returns the task entry."""
    def build(root: Path, fx: Fixtures) -> list[str]:
        data = root / "data"
        data.mkdir()
        return ["run", write(root, recipe(root, task=make(data)))]
    return build


def csv_with(name: str, content: bytes, options: str = "") -> Callable[[Path], str]:
    def make(data: Path) -> str:
        (data / name).write_bytes(content)
        return text_task(data, name, options)
    return make


def truncated_gzip(text: str) -> bytes:
    whole = gzip.compress(text.encode())
    return whole[: len(whole) // 2]


def conll_with(content: bytes) -> Callable[[Path], str]:
    def make(data: Path) -> str:
        task = ner_task(data)
        (data / "train.txt").write_bytes(content)
        return task
    return make


def conll_gzip(content: bytes) -> Callable[[Path], str]:
    def make(data: Path) -> str:
        task = ner_task(data).replace("train.txt", "train.txt.gz")
        (data / "train.txt").unlink()
        (data / "train.txt.gz").write_bytes(content)
        return task
    return make


def parallel_with(en: bytes, de: bytes, suffix: str = "") -> Callable[[Path], str]:
    def make(data: Path) -> str:
        task = mt_task(data)
        (data / "train.en").unlink()
        (data / "train.de").unlink()
        (data / f"train.en{suffix}").write_bytes(en)
        (data / f"train.de{suffix}").write_bytes(de)
        return task
    return make


def killed_then(damage: Callable[[Path], None]) -> Callable[[Path, Fixtures], list[str]]:
    def build(root: Path, fx: Fixtures) -> list[str]:
        path = fx.killed_run(root)
        manifests = sorted(p for p in (root / "out").rglob("*.json") if "checkpoint" in str(p.parent))
        for manifest in manifests:
            damage(manifest)
        return ["run", path.name]
    return build


def results_then(text: str, command: str) -> Callable[[Path, Fixtures], list[str]]:
    def build(root: Path, fx: Fixtures) -> list[str]:
        run = fx.copy_run("cls", root)
        (run / "results.json").write_text(text)
        if command == "report":
            return ["report", "out/runs", "-o", "out/reports/overview"]
        # the recipe that made it: same name and folders, so a rerun lands on the corrupt run
        (root / "r.yaml").write_text(recipe(root, name="r"))
        return ["run", "r.yaml"]
    return build


def plugin(root: Path, module: str, source: str, entry: str | None = None) -> None:
    """A plugin installed by hand into root/site: the module and a .dist-info with its entry point."""
    site = root / "site"
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(source)
    info = site / f"nlpkit_{module}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: nlpkit-{module}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[nlpkit]\n{entry or module} = {module}\n")


TWIN = '''
import importlib
import nlpkit

_mod = importlib.import_module("nlpkit_plugins.models.lstm")
_base = next(v for v in vars(_mod).values() if isinstance(v, type) and getattr(v, "name", None) == "lstm")


class Twin(_base):
    name = "twin"


@nlpkit.hookimpl
def register_models(register):
    register(Twin)
'''


def plugin_case(sources: dict[str, str], args: Callable[[Path], list[str]]) -> Callable[[Path, Fixtures], list[str]]:
    def build(root: Path, fx: Fixtures) -> list[str]:
        for module, source in sources.items():
            plugin(root, module, source)
        return args(root)
    return build


def good_run(root: Path) -> list[str]:
    return ["run", write(root, recipe(root))]


def twin_run(root: Path) -> list[str]:
    return ["run", write(root, recipe(root, models=f"  twin: {TINY_MODEL}\n"))]


def predict_on(kind: str, *texts: str, damage: Callable[[Path], None] | None = None,
               more: tuple[str, ...] = ()) -> Callable[[Path, Fixtures], list[str]]:
    def build(root: Path, fx: Fixtures) -> list[str]:
        run = fx.copy_run(kind, root)
        if damage:
            damage(run)
        return ["predict", *more, str(run.relative_to(root)), *texts]
    return build


def halve(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def under_file(key: str, folder: str) -> Callable[[Path, Fixtures], list[str]]:
    """An output folder below a plain file: unwritable even for root (a chmod would not stop root)."""
    def build(root: Path, fx: Fixtures) -> list[str]:
        (root / "out").mkdir()
        (root / "out" / "blocker").write_text("a file, not a folder\n")
        text = recipe(root).replace(f"{key}: {root}/out/{folder}\n", f"{key}: {root}/out/blocker/sub\n")
        assert text != recipe(root)
        return ["run", write(root, text)]
    return build


def cases() -> list[Case]:
    P, Y, N, D, F, V, G, R = ("1 paths", "2 yaml", "3 numbers", "4 data", "5 disk", "6 devices", "7 plugins",
                              "8 predict")
    wrong_shape = "[1, 2]"
    return [
        # 1. names that become paths
        Case(P, "name ../../escape", run_recipe(lambda r: recipe(r, name='"../../escape"'))),
        Case(P, "name absolute path", run_recipe(lambda r: recipe(r, name=f'"{r}/abs"'))),
        Case(P, "name a/b", run_recipe(lambda r: recipe(r, name='"a/b"'))),
        Case(P, "name a\\b", run_recipe(lambda r: recipe(r, name='"a\\\\b"'))),
        Case(P, "name empty", run_recipe(lambda r: recipe(r, name='""'))),
        Case(P, "name ..", run_recipe(lambda r: recipe(r, name='".."'))),
        Case(P, "model label ../x", run_recipe(lambda r: recipe(r, models="  ../x: {model: lstm, vocab_size: 100,"
                                                                         " embedding_dim: 8, hidden_size: 8}\n"))),
        Case(P, "model label /abs", run_recipe(lambda r: recipe(r, models=f'  "{r}/lab": {{model: lstm}}\n'))),
        Case(P, "recipe file stem with space, no name",
             lambda r, fx: ["run", write(r, recipe(r).replace("name: demo\n", ""), "my recipe.yaml")]),
        # 2. YAML
        Case(Y, "billion laughs (9 levels)", run_recipe(billion_laughs), memory_limit=BOMB_MEMORY),
        Case(Y, "recursive alias", run_recipe(lambda r: recipe(r) + "loop: &a [1, *a]\n")),
        Case(Y, "model entry given twice", run_recipe(lambda r: recipe(
            r, models=f"  lstm: {TINY_MODEL}\n  lstm: {{epochs: 2}}\n"))),
        Case(Y, "train key twice in a flow map", with_train("{epochs: 1, batch_size: 8, batch_size: 4}")),
        Case(Y, "recipe not UTF-8", run_recipe(lambda r: recipe(r).encode().replace(b"demo", b"d\xe9mo"))),
        Case(Y, "recipe is gzip bytes", run_recipe(lambda r: gzip.compress(recipe(r).encode()))),
        Case(Y, "--set value not YAML", lambda r, fx: ["run", write(r, recipe(r)), "--set", "train.lr=[1"]),
        Case(Y, "--set path not in recipe", lambda r, fx: ["run", write(r, recipe(r)), "--set", "models.lsmt.lr=1"]),
        Case(Y, "--set below a scalar", lambda r, fx: ["run", write(r, recipe(r)), "--set", "train.epochs.x=1"]),
        Case(Y, "recipe is a folder", lambda r, fx: ["run", "."]),
        # 3. numbers
        Case(N, "batch_size 0", with_train("{epochs: 1, batch_size: 0}")),
        Case(N, "epochs 0", with_train("{epochs: 0, batch_size: 8}")),
        Case(N, "epochs -1", with_train("{epochs: -1, batch_size: 8}")),
        Case(N, "lr -0.001", with_train("{epochs: 1, lr: -0.001}")),
        Case(N, "lr .nan", with_train("{epochs: 1, lr: .nan}")),
        Case(N, "log_every 0", with_train("{epochs: 1, log_every: 0}")),
        Case(N, "grad_accum 0", with_train("{epochs: 1, grad_accum: 0}")),
        Case(N, "max_steps -3", with_train("{max_steps: -3}")),
        Case(N, "hidden_size -8", with_model("{vocab_size: 100, embedding_dim: 8, hidden_size: -8}")),
        Case(N, "crf on classification", with_model("{vocab_size: 100, embedding_dim: 8, hidden_size: 8, crf: true}")),
        Case(N, "beam_size on tagging", with_model("{embedding_dim: 8, hidden_size: 8, beam_size: 3}",
                                                   lambda r: ner_task(r))),
        # 4. data files
        Case(D, "text_files non-UTF-8 byte", data_case(csv_with("train.csv", good_csv().encode()
                                                                 .replace(b"word5", b"w\xe9rd5")))),
        Case(D, "text_files binary file", data_case(csv_with("train.csv", bytes(range(256)) * 8))),
        Case(D, "text_files truncated gzip", data_case(csv_with("train.csv.gz", truncated_gzip(good_csv(400))))),
        Case(D, "text_files empty train", data_case(csv_with("train.csv", b"text,label\n"))),
        Case(D, "text_files row with extra field", data_case(csv_with("train.csv", good_csv().replace(
            "word3 stock market,biz", "word3 stock market,biz,extra").encode()))),
        Case(D, "text_files missing label column", data_case(csv_with("train.csv", good_csv().encode(),
                                                                      ", label: topic"))),
        Case(D, "conll_files non-UTF-8 byte", data_case(conll_with(b"Alice B-PER\nvisited O\nM\xfcnchen B-LOC\n\n"
                                                                   * 12))),
        Case(D, "conll_files truncated gzip", data_case(conll_gzip(
            truncated_gzip("Alice B-PER\nvisited O\n\n" * 300)))),
        Case(D, "conll_files empty file", data_case(conll_with(b""))),
        Case(D, "parallel_files line counts differ", data_case(parallel_with(b"a\nb\nc\n" * 6, b"a\nb\n" * 6))),
        Case(D, "parallel_files truncated gzip", data_case(parallel_with(
            truncated_gzip("a small house\n" * 400), gzip.compress(b"ein haus\n" * 400), ".gz"))),
        Case(D, "parallel_files binary source", data_case(parallel_with(bytes(range(256)) * 4, b"x\n" * 16))),
        # 5. disk and run folders
        Case(F, "output below a file (not a folder)", under_file("output", "runs")),
        Case(F, "reports below a file", under_file("reports", "reports")),
        Case(F, "checkpoint manifest not JSON", killed_then(lambda p: p.write_text("{not json")), should_fail=False),
        Case(F, "checkpoint manifest wrong shape", killed_then(lambda p: p.write_text(wrong_shape)), should_fail=False),
        Case(F, "results.json corrupt, run again", results_then("{not json", "run"), should_fail=False),
        Case(F, "report: results.json wrong shape", results_then(wrong_shape, "report")),
        Case(F, "report: results.json empty", results_then("", "report")),
        # 6. devices
        Case(V, "device: cuda (CPU-only machine)", with_train("{epochs: 1, device: cuda}")),
        Case(V, "device: cuda:3", with_train("{epochs: 1, device: cuda:3}")),
        Case(V, "device: tpu", with_train("{epochs: 1, device: tpu}")),
        Case(V, "predict --device cuda", predict_on("cls", "stocks fell", more=("--device", "cuda")), outputs=()),
        # 7. plugins
        Case(G, "plugin sys.exit() at import: nlpkit plugins", plugin_case(
            {"quitter": "import sys\nsys.exit()\n"}, lambda r: ["plugins"]), should_fail=False, pick="quitter"),
        Case(G, "plugin sys.exit() at import: a run", plugin_case(
            {"quitter": "import sys\nsys.exit(0)\n"}, good_run), should_fail=False),
        Case(G, "plugin raising at import: a run", plugin_case(
            {"raiser": "raise RuntimeError('boom')\n"}, good_run), should_fail=False),
        Case(G, "two plugins, one name: nlpkit plugins", plugin_case(
            {"twin_a": TWIN, "twin_b": TWIN}, lambda r: ["plugins"]), should_fail=False, pick="twin"),
        Case(G, "two plugins, one name: a run not naming it", plugin_case(
            {"twin_a": TWIN, "twin_b": TWIN}, good_run), should_fail=False),
        Case(G, "two plugins, one name: a run naming it", plugin_case({"twin_a": TWIN, "twin_b": TWIN}, twin_run)),
        # 8. predict
        Case(R, "unfinished run (no results.json)", predict_on(
            "cls", "stocks fell", damage=lambda run: (run / "results.json").unlink()), outputs=()),
        Case(R, "empty text", predict_on("cls", ""), outputs=()),
        Case(R, "whitespace text", predict_on("cls", "   \t"), outputs=()),
        Case(R, "translation, whitespace text", predict_on("mt", "  "), outputs=()),
        Case(R, "ner, empty text", predict_on("ner", ""), outputs=()),
        Case(R, "corrupt model.safetensors", predict_on(
            "cls", "stocks fell", damage=lambda run: halve(run / "model" / "model.safetensors")), outputs=()),
        Case(R, "corrupt model config.json", predict_on(
            "cls", "stocks fell", damage=lambda run: halve(run / "model" / "config.json")), outputs=()),
        Case(R, "run folder that does not exist", lambda r, fx: ["predict", "out/runs/nope", "x"], outputs=()),
    ]
