"""What ``nlpkit run``'s --only, --shard, --launcher and launcher options turn into: the runs to do and the
launcher that carries them out."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from nlpkit.config.recipe import Recipe
from nlpkit.errors import NlpkitError
from nlpkit.launch.launch import engine_launch, make_launcher
from nlpkit.launch.plan import select
from nlpkit.plugins import registry


def launch_for(plan: Recipe, only: tuple[str, ...], shard: str | None, launcher: str | None, jobs: int,
               launcher_options: str | None, slurm_options: str | None, ray_options: str | None,
               ) -> tuple[Recipe, Callable[..., Any] | None]:
    """The recipe cut to the selected runs, and the engine's ``launch`` (None: the engine's own local pool,
    which is what the ``local`` launcher runs too)."""
    if only or shard is not None:
        plan = replace(plan, runs=select(plan.runs, only, shard))
    named = {"slurm": slurm_options, "ray": ray_options}
    implied = [name for name, text in named.items() if text is not None]
    if len(implied) > 1 or (implied and launcher not in (None, implied[0])):
        chosen = ", ".join([f"--launcher {launcher}"] * bool(launcher) + [f"--{n}" for n in implied])
        raise NlpkitError(f"{chosen}: one launcher per command (--slurm and --ray each choose theirs)")
    name = launcher or (implied[0] if implied else "local")
    texts = [(f"--{name}", named[name])] if named.get(name) is not None else []
    texts += [("--launcher-options", launcher_options)] if launcher_options is not None else []
    if name == "local":
        if jobs > 1:
            texts.insert(0, ("--jobs", f"jobs={jobs}"))
    elif jobs > 1:
        raise NlpkitError(f"--jobs {jobs} is the local launcher's; the '{name}' launcher has options of its own "
                          "(--launcher-options)")
    if name != "local" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise NlpkitError(f"--launcher {name} under torchrun/accelerate: each rank would launch every run; start "
                          "the launcher without torchrun (a run's DDP is torchrun's job on the nodes it gives you)")
    reg = registry()
    if name == "local" and "local" not in reg.launchers and not texts:
        return plan, None  # plugins restricted (NLPKIT_PLUGINS) without the local launcher: the engine's own pool
    return plan, engine_launch(make_launcher(reg, name, texts))
