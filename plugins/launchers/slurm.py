"""The ``slurm`` launcher: each run a job of a Slurm job array, through submitit (``pip install -e '.[slurm]'``);
``cluster=local`` runs the same jobs through submitit's local executor, to try it on one machine.

Preemption and time limits: Slurm sends the job a signal (SIGUSR2, ``signal_delay_s`` before the limit, or when
the job is preempted). The run hears it as a stop request: it writes its checkpoint at the next optimizer step and
stops; then the job has submitit requeue it, and the requeued job resumes the run from that checkpoint, so it
finishes exactly as an uninterrupted run would. Every job reports nothing itself: the launcher reads what
became of each run from its folder.

    nlpkit run recipe.yaml --launcher slurm --slurm partition=gpu,gpus_per_run=1,time=04:00:00
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

import nlpkit
from nlpkit.contract import Launcher, RunOutcome
from nlpkit.errors import NlpkitError
from nlpkit.launch.job import launch_environment, outcome_of, require, run_one
from nlpkit.launch.launch import describe
from nlpkit.run import pool


def minutes(text: str) -> int:
    """A Slurm time limit ("MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS") in whole minutes."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise ValueError(f"not a Slurm time limit (e.g. 04:00:00, 90, 1-12:00:00): {text!r}")
    days, a, b, c = (int(g) if g else None for g in match.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        total = days * 1440 + a * 60 + (b or 0) + (c or 0) / 60
    elif c is not None:  # HH:MM:SS
        total = a * 60 + b + c / 60
    elif b is not None:  # MM:SS
        total = a + b / 60
    else:  # MM
        total = a
    return max(1, round(total + 0.49))


class SlurmOptions(nlpkit.Options):
    cluster: Literal["slurm", "local"] = Field("slurm", description="slurm: submit to the Slurm cluster "
                                               "(sbatch); local: run the jobs on this machine (submitit's local "
                                               "executor), to try a setup")
    partition: str | None = Field(None, description="The Slurm partition (default: the cluster's)")
    account: str | None = Field(None, description="The Slurm account to charge")
    qos: str | None = Field(None, description="The Slurm quality of service")
    constraint: str | None = Field(None, description="A Slurm node constraint (features)")
    gpus_per_run: int = Field(0, ge=0, description="GPUs of each run's job")
    cpus_per_run: int | None = Field(None, ge=1, description="CPU cores of each run's job; its torch threads")
    mem: str | None = Field(None, description="Memory of each run's job, as Slurm writes it (16G, 4000M)")
    time: str = Field("04:00:00", description="Time limit of each job (Slurm's format); before it the run "
                                              "checkpoints and its job is requeued")
    signal_delay_s: int = Field(120, ge=1, description="Seconds before the time limit that the checkpoint signal "
                                                       "(SIGUSR2) is sent")
    max_requeues: int = Field(3, ge=0, description="How often a run's job may be requeued after its time limit")
    array_parallelism: int | None = Field(None, ge=1, description="Jobs running at once (default: 256 on Slurm, "
                                                                  "1 with cluster=local)")
    folder: str | None = Field(None, description="Folder for submitit's job files and logs (default: "
                                                  "<output>/<recipe>/.submitit)")
    poll_s: float | None = Field(None, gt=0, description="Seconds between looks at the jobs' states (default: 5 on "
                                                         "Slurm, 0.5 with cluster=local)")

    @field_validator("time")
    @classmethod
    def _time(cls, value: str) -> str:
        minutes(value)
        return value


class RunJob:
    """One run as a submitit job. submitit calls ``checkpoint`` when the job is preempted or about to time out
    (it has one, so the job is requeued): the requeued job runs the same run again, resuming it."""

    def __init__(self, setup: list[Any]):
        self.setup = setup

    def __call__(self, spec: Any, restart: bool, threads: int | None, env: dict[str, Any]) -> RunOutcome:
        from submitit import JobEnvironment

        usr = JobEnvironment._usr_sig()  # the signal submitit's job waits for (SIGUSR2 unless configured)
        requeue = signal.getsignal(usr)  # submitit's handler: checkpoint() + requeue + exit
        preempted: list[int] = []

        def stop_the_run(signum: int, frame: Any) -> None:
            """Have the run checkpoint and stop, as SIGTERM does; the job requeues once it has."""
            preempted.append(signum)
            handler = signal.getsignal(signal.SIGTERM)
            if callable(handler):
                handler(signal.SIGTERM, frame)

        signal.signal(usr, stop_the_run)
        outcome = run_one(spec, restart, threads, env["cwd"], env["environ"], self.setup)
        if preempted and outcome.status == "interrupted" and callable(requeue):
            requeue(usr, None)  # does not return when requeued
        return outcome

    def checkpoint(self, spec: Any, restart: bool, threads: int | None, env: dict[str, Any]) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, spec, False, threads, env)  # resume, never start over


class SlurmLauncher(Launcher):
    name = "slurm"
    Options = SlurmOptions
    extra = "slurm"

    def executor(self, folder: Path) -> Any:
        submitit = require("submitit", "slurm", self.name)
        o = self.options
        common = {"timeout_min": minutes(o.time), "gpus_per_node": o.gpus_per_run, "tasks_per_node": 1,
                  "signal_delay_s": o.signal_delay_s}
        if o.cluster == "local":
            executor = submitit.LocalExecutor(folder, max_num_timeout=o.max_requeues)
            executor.update_parameters(**common)
            return executor
        try:
            executor = submitit.SlurmExecutor(folder, max_num_timeout=o.max_requeues)
        except RuntimeError as err:  # no srun/sbatch on this machine
            raise NlpkitError(f"--launcher slurm: no Slurm on this machine ({err}); run nlpkit on a Slurm login "
                              "node, or try the jobs here with --slurm cluster=local") from None
        slurm = {"partition": o.partition, "account": o.account, "qos": o.qos, "constraint": o.constraint,
                 "cpus_per_task": o.cpus_per_run, "mem": o.mem, "array_parallelism": o.array_parallelism or 256,
                 "time": common.pop("timeout_min"), "gpus_per_node": common.pop("gpus_per_node") or None,
                 "ntasks_per_node": common.pop("tasks_per_node"), **common}
        executor.update_parameters(**{k: v for k, v in slurm.items() if v is not None})
        return executor

    def launch(self, runs: list[tuple[int, Any]], total: int, restart: bool, say: Any) -> list[RunOutcome]:
        first = runs[0][1]
        folder = Path(self.options.folder or first.output / first.recipe / ".submitit").absolute()
        executor = self.executor(folder / "%j")
        job = RunJob(list(pool.CHILD_SETUP))
        env = launch_environment()
        threads = self.options.cpus_per_run
        queue = list(runs)
        at_once = self.options.array_parallelism or (1 if self.options.cluster == "local" else len(runs))
        running: dict[Any, tuple[int, Any]] = {}
        outcomes: list[RunOutcome] = []
        where = "Slurm" if self.options.cluster == "slurm" else "submitit locally"
        say(f"Submitting {len(runs)} run{'s' * (len(runs) != 1)} to {where} (jobs in {folder})")
        try:
            while queue or running:
                batch = queue[: max(0, at_once - len(running))] if self.options.cluster == "local" else queue
                if batch:
                    del queue[: len(batch)]
                    with executor.batch():  # one job array on Slurm
                        jobs = [executor.submit(job, spec, restart, threads, env) for _, spec in batch]
                    for submitted, (position, spec) in zip(jobs, batch):
                        say(f"[{position}/{total}] {spec.name}: job {submitted.job_id}")
                        running[submitted] = (position, spec)
                for submitted in [j for j in running if j.done()]:
                    position, spec = running.pop(submitted)
                    got = self.outcome(submitted, spec)
                    say(describe(position, total, spec, got))
                    outcomes.append(got)
                if running:
                    time.sleep(self.options.poll_s or (5.0 if self.options.cluster == "slurm" else 0.5))
        except KeyboardInterrupt:
            for submitted in running:
                submitted.cancel(check=False)
            raise
        return outcomes

    @staticmethod
    def outcome(job: Any, spec: Any) -> RunOutcome:
        """What the run folder says; what the job returned where the folder cannot tell (a run left to
        another process, a signal); a job that died without a result (killed, out of memory) fails the run."""
        try:
            returned = job.result()
        except Exception as err:  # noqa: BLE001 - submitit's UncompletedJobError / FailedJobError
            lines = [line for line in str(err).strip().splitlines() if line.strip()]
            return outcome_of(spec, died=f"job {job.job_id} ended without a result: {lines[-1] if lines else err}")
        found = outcome_of(spec)
        if found.status in ("finished", "failed") or not isinstance(returned, RunOutcome):
            return found
        return returned


@nlpkit.hookimpl
def register_launchers(register):
    register(SlurmLauncher)
