"""Launcher options from the command line: ``--launcher-options k=v,k=v`` (or ``--slurm``/``--ray`` ...), checked
against the launcher's typed Options with the recipe's kind of message (which key, did you mean, valid keys)."""

from __future__ import annotations

import reprlib

from pydantic import ValidationError

from nlpkit.contract import Options
from nlpkit.errors import NlpkitError, did_you_mean


def parse_pairs(text: str, flag: str) -> dict[str, str]:
    """``"a=1,b=x"`` -> {"a": "1", "b": "x"}; the values stay strings for the typed options to convert (a Slurm
    time like 04:00:00 must not become a number)."""
    pairs: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise NlpkitError(f"{flag} {text!r}: expected key=value pairs separated by commas, got {item!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def launcher_options(cls: type, texts: list[tuple[str, str]]) -> Options:
    """The typed options of launcher class ``cls`` from (flag, "k=v,...") texts, later ones winning."""
    values: dict[str, str] = {}
    for flag, text in texts:
        values.update(parse_pairs(text, flag))
    flags = " / ".join(dict.fromkeys(flag for flag, _ in texts)) or "--launcher-options"
    try:
        return cls.Options.model_validate(values)
    except ValidationError as err:
        valid = sorted(cls.Options.model_fields)
        problems = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"])
            if e["type"] == "extra_forbidden":
                problems.append(f"{flags}: unknown key '{key}' for launcher '{cls.name}'.{did_you_mean(key, valid)} "
                                f"Valid keys: {', '.join(valid) or '(none)'}")
            else:
                problems.append(f"{flags}: '{key}': {e['msg']} (got {reprlib.repr(e.get('input'))})")
        raise NlpkitError("\n  ".join(problems)) from None
