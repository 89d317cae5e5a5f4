"""``nlpkit new-plugin``: write a small, working third-party plugin package from the templates in
``nlpkit/templates/plugin`` (Jinja2), ready to ``pip install -e`` and to test with nlpkit's conformance kit.
One package may hold several plugins (``--kind model,task,dataset,metric,report``), all named after it:

    nlpkit-<name>/
        pyproject.toml              one ``nlpkit`` entry point naming the package
        nlpkit_<name>/__init__.py   imports each plugin's hook (pluggy finds them there)
        nlpkit_<name>/<kind>.py     a minimal working model / task / dataset / metric / report section
        tests/test_<name>_<kind>.py the conformance kit (nlpkit.testing) or a worked case, per plugin
        recipe.yaml                 a tiny example recipe using the package's plugins
        README.md
        data/*.tsv                  (with a dataset) a few lines in the format it reads

The naming rule: the plugin name is a lowercase Python identifier; ``nlpkit-cnn`` (a package name, as people
type it) names the plugin ``cnn`` in the package ``nlpkit-cnn`` with the module ``nlpkit_cnn``.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined

from nlpkit.errors import NlpkitError

KINDS = {"model": "ModelKit", "task": "TaskKit", "dataset": "DatasetKit", "metric": None, "report": None}
HOOKS = {"model": "register_models", "task": "register_tasks", "dataset": "register_datasets",
         "metric": "register_metrics", "report": "report_sections"}
DESCRIPTIONS = {
    "model": "a bag-of-words text classifier (mean of word embeddings, then a linear layer).",
    "task": "text classification scored by the Matthews correlation coefficient.",
    "dataset": "text classification data read from label<TAB>text files.",
    "metric": "a metric tasks can ask for by name (share of examples predicted as the first label).",
    "report": "a report section: each run's test main metric and training time.",
}
# The typed options each generated plugin declares: (field, type, default, what it does). Rendered into the
# module's Options class and the README, so both always agree.
OPTIONS = {
    "model": [("embedding_dim", "int", "64", "size of each word vector"),
              ("dropout", "float", "0.1", "on the pooled sentence vector"),
              ("max_length", "int", "256", "words read per text (the rest is cut off)"),
              ("min_frequency", "int", "1", "words seen fewer times in training map to [UNK]")],
    "task": [("metrics", "list[str]", "[]", "extra metrics registered by plugins (`nlpkit plugins` lists them)")],
    "dataset": [("label_column", "int", "0", "which of the two columns holds the label"),
                ("lowercase", "bool", "False", "lowercase every text")],
    "metric": [],
    "report": [],
}
NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass
class Plan:
    name: str
    kinds: tuple[str, ...]
    folder: Path

    @property
    def module(self) -> str:
        return f"nlpkit_{self.name}"

    @property
    def dist(self) -> str:
        return f"nlpkit-{self.name.replace('_', '-')}"

    @property
    def class_name(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("_"))


def parse_kinds(kinds: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """'model,task' -> ('model', 'task'), in the canonical order; unknown or repeated kinds are errors."""
    parts = [k.strip() for k in kinds.split(",")] if isinstance(kinds, str) else [k.strip() for k in kinds]
    unknown = [k for k in parts if k not in KINDS]
    if unknown or not parts:
        raise NlpkitError(f"--kind takes one or more of {', '.join(KINDS)} separated by commas, got "
                          f"'{','.join(parts)}'")
    return tuple(k for k in KINDS if k in parts)


def validate_name(name: str, kind: str | tuple[str, ...] = "model") -> None:
    """A plugin name is a lowercase Python identifier that no installed plugin (of any kind) already uses."""
    parse_kinds(kind)
    if not NAME.fullmatch(name) or keyword.iskeyword(name):
        hint = re.sub(r"[^a-z0-9_]", "_", name.lower()).strip("_")
        hint = f" (e.g. '{hint}')" if hint and NAME.fullmatch(hint) and not keyword.iskeyword(hint) else ""
        raise NlpkitError(f"'{name}' is not a valid plugin name: use lowercase letters, digits and underscores, "
                          f"starting with a letter{hint}. It names the entry point and the module nlpkit_<name>.")
    from nlpkit.plugins import registry

    reg = registry()
    for table in ("models", "tasks", "datasets"):
        if name in getattr(reg, table):
            raise NlpkitError(f"'{name}' is already a {table[:-1]} plugin, from {reg.sources[(table, name)]}: "
                              "pick another name (names must be unique)")
    for ep in entry_points(group="nlpkit"):
        if ep.name == name:
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?"
            raise NlpkitError(f"'{name}' is already an nlpkit entry point, from {dist}: pick another name")
    module = f"nlpkit_{name}"
    if importlib.util.find_spec(module) is not None:
        raise NlpkitError(f"a module named '{module}' is already installed: pick another name")
    try:
        found = version(f"nlpkit-{name.replace('_', '-')}")
    except PackageNotFoundError:
        return
    raise NlpkitError(f"the distribution 'nlpkit-{name}' is already installed (version {found}): pick another name")


def environment() -> Environment:
    return Environment(loader=PackageLoader("nlpkit", "templates/plugin"), undefined=StrictUndefined,
                       keep_trailing_newline=True, trim_blocks=True, autoescape=False)


def sample_data(split: str) -> str:
    """A few label<TAB>text lines for the dataset scaffold's data/ folder and recipe (two topics)."""
    import random

    words = {"sport": "match team goal coach league season".split(), "music": "song band album guitar tour".split()}
    rng = random.Random(split)
    lines = []
    for _ in range(40 if split == "train" else 12):
        label = rng.choice(list(words))
        lines.append(f"{label}\tthe {' and '.join(rng.sample(words[label], 3))}")
    return "\n".join(lines) + "\n"


def render(plan: Plan) -> dict[str, str]:
    """{relative path: text} of every file of the package."""
    from nlpkit import __version__

    env = environment()
    first = DESCRIPTIONS[plan.kinds[0]]
    description = (first[0].upper() + first[1:]) if len(plan.kinds) == 1 else \
        f"nlpkit plugins: {', '.join(plan.kinds)}."
    ctx = {"name": plan.name, "kinds": plan.kinds, "module": plan.module, "package": plan.module,
           "dist": plan.dist, "class_name": plan.class_name, "description": description,
           "nlpkit_version": __version__, "hooks": HOOKS, "kits": {k: v for k, v in KINDS.items() if v},
           "options": {k: [dict(zip(("name", "type", "default", "help"), row)) for row in OPTIONS[k]]
                       for k in plan.kinds}}
    files = {f"{plan.module}/__init__.py": env.get_template("__init__.py.j2").render(ctx)}
    for kind in plan.kinds:
        own = ctx | {"kind": kind, "kit": KINDS[kind], "options": ctx["options"][kind],
                     "description": DESCRIPTIONS[kind][0].upper() + DESCRIPTIONS[kind][1:]}
        files[f"{plan.module}/{kind}.py"] = env.get_template(f"{kind}.py.j2").render(own)
        files[f"tests/test_{plan.name}_{kind}.py"] = env.get_template(f"test_{kind}.py.j2").render(own)
    files |= {
        "pyproject.toml": env.get_template("pyproject.toml.j2").render(ctx),
        "recipe.yaml": env.get_template("recipe.yaml.j2").render(ctx),
        "README.md": env.get_template("README.md.j2").render(ctx),
    }
    if "dataset" in plan.kinds:
        files.update({f"data/{split}.tsv": sample_data(split) for split in ("train", "validation", "test")})
    return files


def plugin_name(name: str) -> str:
    """A package name ('nlpkit-cnn', as people type it) names the plugin 'cnn'; other names are taken as given."""
    prefix = "nlpkit-"
    return name[len(prefix):].replace("-", "_") if name.startswith(prefix) and len(name) > len(prefix) else name


def new_plugin(name: str, kind: str | tuple[str, ...], out: str | Path | None = None
               ) -> tuple[Path, list[Path], Plan]:
    """Validate the name, render the package into ``out`` (default ./nlpkit-<name>); return folder, files and
    the plan (its ``name`` is the plugin name, e.g. 'cnn' for 'nlpkit-cnn')."""
    name = plugin_name(name)
    kinds = parse_kinds(kind)
    validate_name(name, kinds)
    plan = Plan(name, kinds, Path(out) if out else Path(f"nlpkit-{name.replace('_', '-')}"))
    if plan.folder.exists() and any(plan.folder.iterdir()):
        raise NlpkitError(f"{plan.folder} exists and is not empty: choose another folder with -o")
    written = []
    for rel, text in render(plan).items():
        path = plan.folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return plan.folder, written, plan
