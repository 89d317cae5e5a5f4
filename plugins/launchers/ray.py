"""The ``ray`` launcher: each run a Ray task with its CPUs and GPUs, on a Ray cluster (``address=auto`` or
ray://...) or on a Ray instance started on this machine for the command (``pip install -e '.[ray]'``).

Each task gets a fresh worker process (``max_calls=1``), so no run inherits another's state (accelerate's,
RNG streams, cached memory), as with the local launcher; what became of each run is read back from its folder.

    nlpkit run recipe.yaml --launcher ray --ray address=auto,gpus_per_run=1
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field

import nlpkit
from nlpkit.contract import Launcher, RunOutcome
from nlpkit.launch.job import launch_environment, outcome_of, require, run_one
from nlpkit.launch.launch import describe
from nlpkit.run import pool


class RayOptions(nlpkit.Options):
    address: str | None = Field(None, description="The Ray cluster to join (auto: the one this machine belongs "
                                                  "to; ray://host:10001); default: a Ray instance on this machine")
    cpus_per_run: float = Field(1.0, gt=0, description="CPUs each run's task reserves (and its torch threads)")
    gpus_per_run: float = Field(0.0, ge=0, description="GPUs each run's task reserves")
    memory_gb: float | None = Field(None, gt=0, description="Memory each run's task reserves, in GB")
    local_cpus: int | None = Field(None, ge=1, description="CPUs of the Ray instance started on this machine "
                                                           "(default: all); runs at once = local_cpus / cpus_per_run")


class RayLauncher(Launcher):
    name = "ray"
    Options = RayOptions
    extra = "ray"

    def launch(self, runs: list[tuple[int, Any]], total: int, restart: bool, say: Any) -> list[RunOutcome]:
        ray = require("ray", "ray", self.name)
        o = self.options
        started = not ray.is_initialized()
        if started:
            ray.init(address=o.address, num_cpus=None if o.address else o.local_cpus, include_dashboard=False,
                     log_to_driver=True)
        pending: dict[Any, tuple[int, Any]] = {}
        try:
            resources: dict[str, Any] = {"num_cpus": o.cpus_per_run, "num_gpus": o.gpus_per_run}
            if o.memory_gb:
                resources["memory"] = int(o.memory_gb * 1024**3)
            task = ray.remote(max_calls=1, max_retries=0, **resources)(run_one)
            env = launch_environment()
            threads = max(1, math.floor(o.cpus_per_run))
            for position, spec in runs:
                ref = task.remote(spec, restart, threads, env["cwd"], env["environ"], list(pool.CHILD_SETUP))
                pending[ref] = (position, spec)
            say(f"Running {len(runs)} run{'s' * (len(runs) != 1)} as Ray tasks ({o.cpus_per_run:g} CPU, "
                f"{o.gpus_per_run:g} GPU each; cluster: {ray.cluster_resources().get('CPU', 0):g} CPUs)")
            outcomes = []
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    position, spec = pending.pop(ref)
                    got = self.outcome(ray, ref, spec)
                    say(describe(position, total, spec, got))
                    outcomes.append(got)
            return outcomes
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            if started:
                ray.shutdown()

    @staticmethod
    def outcome(ray: Any, ref: Any, spec: Any) -> RunOutcome:
        """The folder's word first; the task's own report where the folder cannot tell (a run left to another
        process, a signal); a worker that died (killed, out of memory) fails the run."""
        try:
            returned = ray.get(ref)
        except ray.exceptions.RayError as err:
            lines = [line for line in str(err).strip().splitlines() if line.strip()]
            return outcome_of(spec, died=f"Ray task ended without a result: {lines[0] if lines else type(err)}")
        found = outcome_of(spec)
        return found if found.status in ("finished", "failed") else returned


@nlpkit.hookimpl
def register_launchers(register):
    register(RayLauncher)
