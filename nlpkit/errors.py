"""User-facing errors: say what is wrong, where, and what was probably meant."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class NlpkitError(Exception):
    """An error caused by input (a recipe, a name, a file); the CLI prints it without a traceback."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def not_found(kind: str, name: str, available: Iterable[str]) -> NlpkitError:
    """The registry-miss message: "Can't find 'x' in models. Available: a, b, c. Did you mean 'y'?"."""
    available = sorted(available)
    return NlpkitError(
        f"Can't find '{name}' in {kind}. Available: {', '.join(available) or '(none)'}.{did_you_mean(name, available)}"
    )
