"""The ``tensorboard`` tracker: event files in the run folder, so ``tensorboard --logdir runs/<recipe>`` shows
every run of the recipe, live. Scalars per log step and evaluation, the resolved recipe as text, and at the end
the run's hyperparameters with its final metrics (the HParams tab).

A resumed run opens a new event file whose first event purges every point after its checkpoint step: TensorBoard
then drops what the interrupted attempt logged after the checkpoint, and the resumed run logs those steps once
(a run started over purges everything). One point per step, none missing."""

from __future__ import annotations

from typing import Any

import yaml

import nlpkit
from nlpkit.config.recipe import flatten


class TensorBoardTracker(nlpkit.Tracker):
    name = "tensorboard"
    requires = ("tensorboard",)

    def start(self, resume_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.resumed = bool(resume_step)
        self.last_step = resume_step
        # purge_step: TensorBoard hides the points of this folder at steps >= it (0: a run that starts over)
        self.writer = SummaryWriter(log_dir=str(self.run.folder), purge_step=resume_step + 1 if resume_step else 0)

    def log_settings(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        if not self.resumed:  # logged at step 0 by the first attempt, which the purge kept
            text = yaml.safe_dump(settings, sort_keys=False, allow_unicode=True)
            self.writer.add_text("recipe", "    " + text.replace("\n", "\n    "), global_step=0)  # Markdown code

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.last_step = max(self.last_step, step)

    def checkpoint(self, step: int) -> None:
        self.writer.flush()

    def log_results(self, results: dict[str, Any]) -> None:
        """The HParams tab: the run's flattened settings beside its test metrics (also scalars at the last step;
        the validation curves already hold the best validation point)."""
        from torch.utils.tensorboard.summary import hparams

        metrics = {f"test/{k}": float(v) for k, v in (results.get("test") or {}).items() if _number(v)}
        params = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                  for k, v in flatten(self.settings).items()}
        for summary in hparams(params, metrics):
            self.writer.file_writer.add_summary(summary)
        step = int(results.get("steps") or self.last_step)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, global_step=step)

    def end(self, status: str) -> None:
        self.writer.close()


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@nlpkit.hookimpl
def register_trackers(register):
    register(TensorBoardTracker)
