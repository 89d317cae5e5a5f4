"""One run, carried out in whatever process a launcher gives it (a Slurm job, a Ray worker), and its outcome read
back from the run folder. A launcher needs nothing else from nlpkit: ``run_one(spec)`` where the run happens,
``outcome_of(spec)`` where it is watched from."""

from __future__ import annotations

import importlib
import os
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nlpkit.config.recipe import RunSpec
from nlpkit.contract import RunOutcome
from nlpkit.errors import NlpkitError
from nlpkit.run.folders import RunLocked, failure_of, run_status, write_failure
from nlpkit.train.checkpoint import Interrupted


def _interrupt(signum: int, _frame: Any) -> None:
    raise Interrupted(f"Stopped by signal {signum} before training began", signum)


def run_one(spec: RunSpec, restart: bool = False, threads: int | None = None, cwd: str | None = None,
            environ: dict[str, str] | None = None, setup: Sequence[Callable[[], Any]] = ()) -> RunOutcome:
    """Train and evaluate ``spec`` in this process, as ``nlpkit run`` does in a run's own process, and say what
    became of it. ``cwd`` and ``environ`` are the launching process's (relative paths and NLPKIT_DATA mean the
    same on a cluster node or a Ray worker); ``threads``: torch's CPU threads (the CPUs the job was given);
    ``setup``: callables run first (tests inject faults through them, as ``nlpkit.run.pool.CHILD_SETUP``).
    SIGTERM/SIGINT before training stop the run at once; during training they checkpoint it first."""
    if cwd:
        os.chdir(cwd)
    os.environ.update(environ or {})
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):  # until the training loop installs its own
            signal.signal(sig, _interrupt)
    try:
        import torch

        if threads:
            torch.set_num_threads(threads)
        for fn in setup:
            fn()
        from nlpkit.run.engine import execute

        results = execute(spec, restart=restart, own_process=True)
    except RunLocked as err:
        return RunOutcome(spec.name, "skipped", error=str(err))
    except Interrupted as err:
        return RunOutcome(spec.name, "interrupted", error=str(err), signum=err.signum)
    except BaseException as err:  # noqa: BLE001 - the launcher reports it; failure.json holds the details
        return RunOutcome(spec.name, "failed", error=f"{type(err).__name__}: {err}")
    return RunOutcome(spec.name, "finished", results=results)


def launch_environment() -> dict[str, Any]:
    """What ``run_one`` needs from the launching process: its folder and the NLPKIT_* variables."""
    return {"cwd": os.getcwd(), "environ": {k: v for k, v in os.environ.items() if k.startswith("NLPKIT_")}}


def outcome_of(spec: RunSpec, died: str | None = None) -> RunOutcome:
    """What the run folder says became of ``spec``: finished (with its results), failed (with the error in
    failure.json), interrupted (a checkpoint to resume from) or skipped (never started). ``died``: the process
    carrying the run ended without a word (killed, out of memory): recorded as the run's failure unless the
    folder says otherwise or another process holds it."""
    import json

    folder = Path(spec.folder)
    status = run_status(folder)
    if status == "finished":
        return RunOutcome(spec.name, "finished", results=json.loads((folder / "results.json").read_text()))
    if died and status != "failed":
        from nlpkit.run.folders import run_lock

        try:
            with run_lock(folder):
                write_failure(folder, died, "ProcessDied")
        except RunLocked:
            return RunOutcome(spec.name, "skipped", error=f"{died}; another process holds the run folder now")
        return RunOutcome(spec.name, "failed", error=f"ProcessDied: {died}")
    if status == "failed":
        return RunOutcome(spec.name, "failed", error=failure_of(folder) or "failed")
    if status == "interrupted":
        return RunOutcome(spec.name, "interrupted", error="stopped before it finished: resumes from its checkpoint")
    return RunOutcome(spec.name, "skipped", error="never started")


def require(module: str, extra: str, launcher: str) -> Any:
    """Import an optional library a launcher needs, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise NlpkitError(f"The '{launcher}' launcher needs {module} ({err}): pip install -e '.[{extra}]' "
                          f"(or pip install 'nlpkit[{extra}]')") from None
