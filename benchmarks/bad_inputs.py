"""A hostile-input corpus for issue #15: ~70 faulty recipes, data files, disk states, plugins and predict calls,
each run as a subprocess of a chosen ``nlpkit`` in a fresh temporary folder.

Why a script and not tests: the issue's must-show is a before/after table over the same corpus, and "before" is
an older checkout whose test suite does not know these cases. Each case records its exit code, the first line of
its message, whether a Python traceback was printed, and whether any file appeared (or changed) in the temporary
folder outside the case's declared output folders (its own input files excluded).

    python benchmarks/bad_inputs.py --nlpkit /work/wt-before/.venv/bin --out before.json
    python benchmarks/bad_inputs.py --nlpkit .venv/bin --out after.json
    python benchmarks/bad_inputs.py --table before.json after.json > table.md

``--only REGEX`` runs the matching cases; ``--merge A.json B.json --out C.json`` folds such a rerun (B) into A.
Run it niced on a shared machine: each case starts Python and torch. About 70 cases, 5-10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
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


# ---------------------------------------------------------------------------------------------------- running

def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def first_line(text: str) -> str:
    """The message's first line: click's ``Error:`` line, else a traceback's exception line, else the first line
    that says something (``key: ...``); a line ending in ':' is joined with the next, which holds the point."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    at = next((i for i, line in enumerate(lines) if line.startswith(("Error", "Aborted"))), None)
    if at is None and any(line.startswith("Traceback") for line in lines):
        at = len(lines) - 1
    if at is None:
        at = next((i for i, line in enumerate(lines) if ": " in line or line.lower().startswith("warning")), 0)
    if not lines:
        return ""
    line = lines[at]
    if line.endswith(":") and at + 1 < len(lines):
        line += " " + lines[at + 1]
    return line[:200]


def run_case(case: Case, nlpkit: Path, fixtures: Fixtures) -> Result:
    with tempfile.TemporaryDirectory(prefix="badin-") as tmp:
        root = Path(tmp)
        try:
            args = case.build(root, fixtures)
        except BaseException as failed:  # e.g. a fixture run this checkout cannot train: say so, go on
            return Result(case.group, case.name, "not built", f"{type(failed).__name__}: {failed}"[:200], False, [],
                          0.0, case.should_fail)
        before = snapshot(root)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NLPKIT_")}
        env.update(PYTHONDONTWRITEBYTECODE="1", **case.env)
        if (root / "site").exists():
            env["PYTHONPATH"] = str(root / "site")

        def limits() -> None:
            if case.memory_limit:
                resource.setrlimit(resource.RLIMIT_AS, (case.memory_limit, case.memory_limit))

        start = time.perf_counter()
        # a session of its own, so a timeout ends the run's spawned worker processes too
        proc = subprocess.Popen([str(nlpkit), *args], cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, preexec_fn=limits,
                                start_new_session=True, errors="backslashreplace")
        try:
            stdout, stderr = proc.communicate(case.stdin, timeout=TIMEOUT_S)
            code: int | str = proc.returncode
            output = stderr + "\n" + stdout
            shown = first_line(stderr) or first_line(stdout)
            if case.pick:
                shown = next((line.strip() for line in output.splitlines() if case.pick in line), shown)[:200]
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            code, output = f"timeout {TIMEOUT_S}s", stderr + stdout
            shown = "(killed after the timeout) " + (first_line(stderr) or first_line(stdout))
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # workers left behind by a parent that exited
            except ProcessLookupError:
                pass
        seconds = time.perf_counter() - start
        after = snapshot(root)
        allowed = tuple(o + os.sep for o in case.outputs)
        outside = sorted(p for p, stamp in after.items() if before.get(p) != stamp and not p.startswith(allowed))
        return Result(case.group, case.name, code, shown, "Traceback" in output, outside, round(seconds, 1),
                      case.should_fail)


def run_all(nlpkit_bin: Path, out: Path, only: str | None) -> None:
    nlpkit = nlpkit_bin.resolve() / "nlpkit"
    results = []
    with tempfile.TemporaryDirectory(prefix="badin-fixtures-") as tmp:
        fixtures = Fixtures(nlpkit, Path(tmp))  # trained lazily, by the first case that needs one
        for case in cases():
            if only and not re.search(only, f"{case.group} {case.name}"):
                continue
            result = run_case(case, nlpkit, fixtures)
            results.append(asdict(result))
            save(out, nlpkit_bin, results)  # after each case: a run cut short keeps what it measured
            print(f"{result.group:<10} {result.name:<45} exit={result.exit!s:<4} tb={int(result.traceback)} "
                  f"outside={len(result.wrote_outside)} {result.seconds:5.1f}s  {result.first_line}",
                  flush=True)
    save(out, nlpkit_bin, results)


def save(out: Path, nlpkit_bin: Path, results: list[dict]) -> None:
    commit = subprocess.run(["git", "-C", str(nlpkit_bin.parent.parent), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"nlpkit": str(nlpkit_bin), "commit": commit, "cases": results}, indent=1) + "\n")


# ------------------------------------------------------------------------------------------------------ table

def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def verdict(r: dict) -> str:
    bad = []
    if r["traceback"]:
        bad.append("traceback")
    if r["wrote_outside"]:
        bad.append("wrote outside")
    if r["should_fail"] and r["exit"] == 0:
        bad.append("exit 0")
    if not r["should_fail"] and r["exit"] not in (0, "not built"):
        bad.append(f"exit {r['exit']} where it should carry on")
    if not isinstance(r["exit"], int):
        bad.append(str(r["exit"]))
    return ", ".join(bad) or "ok"


def table(before_path: Path, after_path: Path) -> str:
    before = json.loads(before_path.read_text())
    after = json.loads(after_path.read_text())
    old = {(r["group"], r["name"]): r for r in before["cases"]}
    expected = {(c.group, c.name): c.should_fail for c in cases()}  # the corpus's word, not the record's
    for r in before["cases"] + after["cases"]:
        r["should_fail"] = expected.get((r["group"], r["name"]), r["should_fail"])
    rows = [f"Before: `{before['commit']}`, after: `{after['commit']}`. Verdict: a traceback, a file written outside "
            "the output folders, exit 0 where the case must fail (or not 0 where it should carry on: a corrupt "
            "results.json re-run, a broken plugin skipped), or a timeout; else ok. Whether a message is clear is for "
            "the reader.\n",
            "| class | case | before: exit, first line | after: exit, first line | traceback? (before/after) | "
            "wrote outside? (before/after) | verdict before / after |",
            "|---|---|---|---|---|---|---|"]
    for r in after["cases"]:
        b = old.get((r["group"], r["name"]))

        def show(x: dict | None) -> str:
            return "not run" if x is None else f"{x['exit']}: {cell(x['first_line'])}"

        def outside(x: dict | None) -> str:
            if x is None:
                return "-"
            files = x["wrote_outside"]
            return f"yes, {len(files)} files: {files[0]} ..." if files else "no"

        rows.append(f"| {r['group']} | {cell(r['name'])} | {show(b)} | {show(r)} | "
                    f"{'-' if b is None else ('yes' if b['traceback'] else 'no')} / {'yes' if r['traceback'] else 'no'}"
                    f" | {cell(outside(b))} / {cell(outside(r))} | {'-' if b is None else verdict(b)} / "
                    f"{verdict(r)} |")
    counts = {name: sum(verdict(r) == "ok" for r in data["cases"]) for name, data in (("before", before),
                                                                                       ("after", after))}
    rows.append(f"\nok: before {counts['before']}/{len(before['cases'])}, after {counts['after']}/"
                f"{len(after['cases'])}.")
    return "\n".join(rows) + "\n"


def merge(first: Path, second: Path, out: Path) -> None:
    """A rerun of some cases (``--only``) folded into a whole run's results, in the corpus's order."""
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    by_case = {(r["group"], r["name"]): r for r in a["cases"] + b["cases"]}
    order = [(c.group, c.name) for c in cases()]
    a["cases"] = [by_case[key] for key in order if key in by_case]
    a["rerun"] = sorted({r["name"] for r in b["cases"]})
    out.write_text(json.dumps(a, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nlpkit", type=Path, help="the bin folder of the venv whose nlpkit is run")
    parser.add_argument("--out", type=Path, help="results JSON")
    parser.add_argument("--only", help="run the cases whose 'class name' matches this regular expression")
    parser.add_argument("--merge", nargs=2, type=Path, metavar=("A", "B"), help="B's cases replace A's, into --out")
    parser.add_argument("--table", nargs=2, type=Path, metavar=("BEFORE", "AFTER"), help="print the markdown table")
    args = parser.parse_args()
    if args.table:
        sys.stdout.write(table(*args.table))
    elif args.merge and args.out:
        merge(*args.merge, args.out)
    elif args.nlpkit and args.out:
        run_all(args.nlpkit, args.out, args.only)
    else:
        parser.error("give --nlpkit and --out, or --table BEFORE AFTER")


if __name__ == "__main__":
    main()
