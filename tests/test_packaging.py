"""pyproject.toml lists its packages by hand (plugins/ installs as nlpkit_plugins): a package missing from the list
works from an editable checkout and is absent from a wheel, so every folder holding Python code must be listed."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+ (3.10 has no TOML reader in the standard library)

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_in_pyproject():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    found = set()
    for name, folder in tool["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            if "templates" not in parts and "__pycache__" not in parts:
                found.add(".".join((name, *parts)))
    assert found - listed == set(), "packages missing from [tool.setuptools] packages in pyproject.toml"
