"""A fault for a sweep (patched into ``nlpkit run``'s process by a driver script, with runs in that process:
``NLPKIT_IN_PROCESS=1``): the process SIGKILLs itself right after the ``nth`` train log line of step ``step``,
i.e. in the nth run, as a machine dying mid-trial would (no handler runs, nothing is told to the study)."""

import os
import signal


def die_in_nth_run_at(nth: int, step: int) -> None:
    from nlpkit.train.log import MetricsLog

    log = MetricsLog.__call__
    seen = []

    def log_then_die(self, **row):
        log(self, **row)
        if row.get("split") == "train" and row.get("step") == step:
            seen.append(step)
            if len(seen) == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    MetricsLog.__call__ = log_then_die
