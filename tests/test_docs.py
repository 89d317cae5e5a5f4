"""docs/plugins.md runs as written. Its code blocks are the files of one plugin package (a block whose first line
is ``# file: PATH``) or snippets; the test writes the files into a package, installs it, executes every snippet,
runs the package's own conformance tests and trains its recipe through the engine; the option tables must match
the schema; every ``nlpkit`` command in the docs' (and README's) shell blocks must parse, and the cheap ones run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from nlpkit.cli import main
from nlpkit.config.options_help import TABLE, refresh
from nlpkit.config.recipe import load_recipe
from nlpkit.testing import install_package, plugins_on_path, tiny_records

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "plugins.md"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
FILE = re.compile(r"#\s*file:\s*(\S+)")
LANGUAGES = {"python", "toml", "yaml", "bash", ""}  # "" is a diagram or a listing: nothing to run


@dataclass
class Block:
    lang: str
    code: str
    line: int  # of the opening fence, for messages
    file: str | None  # the package file the block is, from its "# file: PATH" first line

    @property
    def where(self) -> str:
        return f"{DOC.name}, line {self.line}"


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    out = []
    for match in FENCE.finditer(text):
        lang, code = match.group(1), match.group(2)
        first = code.splitlines()[0] if code.strip() else ""
        named = FILE.fullmatch(first.strip())
        out.append(Block(lang, code, text.count("\n", 0, match.start()) + 1, named.group(1) if named else None))
    return out


DOC_BLOCKS = blocks(DOC)
PACKAGE = "nlpkit-wordcnn"


def package_files() -> dict[str, str]:
    """{path: text} of the package the doc builds; blocks naming one file are joined in order."""
    files: dict[str, str] = {}
    for block in DOC_BLOCKS:
        if block.file:
            files[block.file] = files.get(block.file, "") + block.code
    return files


def fasttext_lines(n: int, seed: int) -> str:
    return "".join(f"__label__{r['label']} {r['text']}\n" for r in tiny_records("classification", n, seed))


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """The package written from the doc's file blocks into <tmp>/nlpkit-wordcnn, installed into <tmp>/test-site, with
    a little data for its recipe in <tmp>/data/topics; yields <tmp> with the plugins loaded."""
    root = tmp_path_factory.mktemp("docs")
    for rel, text in package_files().items():
        path = root / PACKAGE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    topics = root / "data" / "topics"
    topics.mkdir(parents=True)
    for name, n, seed in (("train.txt", 96, 0), ("valid.txt", 24, 1), ("test.txt", 24, 2)):
        (topics / name).write_text(fasttext_lines(n, seed), encoding="utf-8")
    install_package(root / PACKAGE, root / "test-site")
    with plugins_on_path(root / "test-site"):
        yield root


@pytest.fixture
def in_package_root(package, monkeypatch):
    monkeypatch.chdir(package)
    monkeypatch.setenv("NLPKIT_IN_PROCESS", "1")  # the runs see the installed test site without a new process
    return package


def test_every_block_has_a_known_language_and_the_package_is_whole():
    assert DOC_BLOCKS, "no code blocks found in docs/plugins.md"
    for block in DOC_BLOCKS:
        assert block.lang in LANGUAGES, f"{block.where}: a ```{block.lang} block; the doc test runs {LANGUAGES}"
    files = package_files()
    for rel in ("pyproject.toml", "nlpkit_wordcnn/__init__.py", "nlpkit_wordcnn/model.py", "nlpkit_wordcnn/task.py",
                "nlpkit_wordcnn/dataset.py", "nlpkit_wordcnn/metric.py", "nlpkit_wordcnn/report.py",
                "nlpkit_wordcnn/tracker.py", "tests/test_wordcnn.py", "recipe.yaml"):
        assert rel in files, f"the doc no longer shows the file {rel} of its example package"


def test_option_tables_match_the_schema():
    """The generated tables: regenerate with ``python -m nlpkit.config.options_help docs/plugins.md``."""
    text = DOC.read_text(encoding="utf-8")
    names = [m.group(2) for m in TABLE.finditer(text)]
    assert {"train", "task"} <= set(names), names
    assert refresh(text) == text, "docs/plugins.md's option tables are stale: run " \
        "python -m nlpkit.config.options_help docs/plugins.md"
    assert "| `precision` | str | `'auto'` | auto, fp32, bf16, fp16 |" in text


def test_a_new_empty_table_is_filled_without_swallowing_the_text_after_it():
    empty = "<!-- options: train -->\n<!-- /options -->\nkept\n<!-- options: task -->\n<!-- /options -->\n"
    filled = refresh(empty)
    assert "kept" in filled and filled.count("| key | type |") == 2 and refresh(filled) == filled


def test_package_registers_every_plugin(package):
    from nlpkit.plugins import registry

    reg = registry()
    source = "nlpkit-wordcnn 0.1.0"
    for kind, name in (("models", "wordcnn"), ("tasks", "topic_f1"), ("datasets", "fasttext_files"),
                       ("metrics", "kappa")):
        assert reg.sources[(kind, name)] == source, (kind, name)
    assert not reg.failed, reg.failed


def test_the_package_passes_ruff_under_its_own_settings(package):
    """A reader pastes these files into a package of their own: there nlpkit is a third-party import."""
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                            capture_output=True, text=True, cwd=package / PACKAGE, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]


def test_every_python_snippet_runs(in_package_root):
    """Blocks that are not files of the package run as they are, in the folder holding the package."""
    snippets = [b for b in DOC_BLOCKS if b.lang == "python" and not b.file]
    assert len(snippets) >= 2
    for block in snippets:
        code = compile("\n" * block.line + block.code, str(DOC), "exec")  # tracebacks point at the doc's lines
        exec(code, {"__name__": f"docs_snippet_{block.line}"})


def test_the_package_passes_its_conformance_kit(package):
    """What the doc tells an author to run: pytest on the package's tests, against the installed plugins."""
    tests = package / PACKAGE / "tests"
    code = pytest.main([str(tests), "-q", "-p", "no:cacheprovider", "-o", "addopts=", "--rootdir", str(tests),
                        "-W", "ignore::DeprecationWarning"])
    assert code == 0, "the doc's package fails its own conformance tests (output above)"


def test_every_recipe_block_loads(in_package_root, monkeypatch):
    monkeypatch.setenv("NLPKIT_DATA", str(in_package_root / "data"))
    recipes = [b for b in DOC_BLOCKS if b.lang == "yaml" and "models" in (yaml.safe_load(b.code) or {})]
    assert len(recipes) >= 2
    for block in recipes:
        path = in_package_root / f"recipe-line{block.line}.yaml"
        path.write_text(block.code, encoding="utf-8")
        plan = load_recipe(path)
        assert plan.runs, block.where


def test_the_package_recipe_trains_beside_a_builtin_and_reports(in_package_root):
    """The doc's recipe.yaml, cut to a few steps: the task's metric option, details, the tracker's results key,
    the fp32 preference on CPU, and the report section with its captioned figure."""
    overrides = ["train.max_steps=4", "train.eval_every=2", "train.progress=false", "seeds=[1]",
                 "models.wordcnn.channels=16", "models.wordcnn.embedding_dim=16",
                 "models.lstm.vocab_size=200", "models.lstm.embedding_dim=8", "models.lstm.hidden_size=8"]
    args = ["run", f"{PACKAGE}/recipe.yaml"] + [arg for o in overrides for arg in ("--set", o)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    runs = in_package_root / "runs" / "wordcnn-vs-lstm"
    cnn = json.loads((runs / "topic_f1-wordcnn-seed1" / "results.json").read_text())
    lstm = json.loads((runs / "topic_f1-lstm-seed1" / "results.json").read_text())
    for res in (cnn, lstm):
        assert res["main_metric"] == "macro_f1" and {"macro_f1", "accuracy", "kappa"} <= set(res["test"])
        assert set(res["test_details"]["per_class_f1"]) == {"animal", "food", "place"}
        assert res["validation_curve"] and res["validation_curve"][0][0] == 2  # [step, value] per evaluation
    assert cnn["precision"] == "fp32"  # prefers_fp32_on_cpu: auto never picks bf16 for it on a CPU
    report = (in_package_root / "reports" / "wordcnn-vs-lstm" / "report.md").read_text()
    assert "### Per-class F1" in report and "Test F1 per class (mean over seeds)" in report
    assert (in_package_root / "reports" / "wordcnn-vs-lstm" / "figures" /
            "topic_f1_fasttext_files_per_class_f1.png").is_file()
    loaded = CliRunner().invoke(main, ["predict", str(runs / "topic_f1-wordcnn-seed1"), "the cat and the dog"])
    assert loaded.exit_code == 0 and "->" in loaded.output, loaded.output


def nlpkit_commands(path: Path) -> list[tuple[str, list[str]]]:
    """(where, argv after `nlpkit`) of every nlpkit command in a Markdown file's bash blocks."""
    out = []
    for block in blocks(path):
        if block.lang != "bash":
            continue
        for n, line in enumerate(block.code.splitlines(), block.line + 1):
            for part in re.split(r"&&|\|\||;|\|", line.split(" # ")[0]):
                words = shlex.split(part, comments=True)
                while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value before the command
                    words.pop(0)
                if words[:3] == ["torchrun"] or "-m" in words[:4] and "nlpkit" in words:
                    words = words[words.index("nlpkit"):]
                if words and words[0] == "nlpkit":
                    out.append((f"{path.name}, line {n}", words[1:]))
    return out


COMMANDS = [c for p in (DOC, ROOT / "README.md") for c in nlpkit_commands(p)]


@pytest.mark.parametrize("where,argv", COMMANDS, ids=[f"{w}: nlpkit {' '.join(a)}" for w, a in COMMANDS])
def test_nlpkit_commands_in_the_docs_parse(where, argv):
    """Each command names a real subcommand and real options with valid values (a missing file is fine)."""
    command = main.get_command(click.Context(main), argv[0])
    assert command is not None, f"{where}: no command 'nlpkit {argv[0]}'"
    try:
        command.make_context(argv[0], argv[1:])
    except click.BadParameter as err:
        assert "does not exist" in err.format_message(), f"{where}: {err.format_message()}"
    except click.ClickException as err:
        pytest.fail(f"{where}: nlpkit {' '.join(argv)}: {err.format_message()}")


def test_cheap_commands_of_the_doc_run(in_package_root, tmp_path):
    """The commands that take a second: listing and scaffolding (into a temporary folder)."""
    cheap = [argv for _, argv in nlpkit_commands(DOC) if argv[0] in ("plugins", "new-plugin")]
    assert any(a[0] == "new-plugin" for a in cheap) and any("--options" in a for a in cheap)
    for argv in cheap:
        if argv[0] == "new-plugin":
            argv = argv[: argv.index("-o")] + ["-o", str(tmp_path / "scaffold")]
        result = CliRunner().invoke(main, argv)
        assert result.exit_code == 0, f"nlpkit {' '.join(argv)}: {result.output}"
    assert (tmp_path / "scaffold" / "nlpkit_textcnn" / "report.py").is_file()
    options = CliRunner().invoke(main, ["plugins", "--options", "wordcnn"]).output
    classification, tagging = options.split(" for tagging tasks:")
    assert "pooling" in classification and "pooling" not in tagging
    assert "How word features become one text vector." in options


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    """README.md's Python blocks, if it has any, run as they are."""
    monkeypatch.chdir(tmp_path)
    for block in blocks(ROOT / "README.md"):
        if block.lang == "python":
            exec(compile(block.code, "README.md", "exec"), {"__name__": "readme_snippet"})
    assert os.getcwd() == str(tmp_path)
