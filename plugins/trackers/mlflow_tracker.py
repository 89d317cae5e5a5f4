"""The ``mlflow`` tracker: one MLflow run per nlpkit run, in one experiment per recipe.

Where: ``MLFLOW_TRACKING_URI`` when set (a server, or a file store to sync later), else a SQLite store beside the
recipe's runs (``sqlite:///<output>/<recipe>/mlflow.db``, artifacts in ``mlartifacts/`` there): offline by
default, ``mlflow ui --backend-store-uri sqlite:///runs/<recipe>/mlflow.db`` shows it. The MLflow run is named like
the nlpkit run; its params are the resolved settings with dotted keys; tags say task, model, plugin, seed, dataset,
settings_hash (the seeds of one configuration share it) and provenance; metrics carry their steps; a finished run
adds its model folder, results.json, recipe.yaml and metrics.jsonl as artifacts, and the comparison report's
figures and summary once ``nlpkit run`` wrote it (``report/``). MLflow's usage telemetry (which posts to the
network, and waits for it when a process exits) is off unless ``MLFLOW_DISABLE_TELEMETRY`` says otherwise.

Resume: the MLflow run id is kept in the run folder (tracking.json), and a resumed run continues that MLflow run.
MLflow cannot delete single points, so a resumed run skips the points the interrupted attempt already logged
(each metric's steps up to its highest logged one) and logs the rest: one point per step, none missing. Resume is
exact in nlpkit (same batches, same RNG streams), so the points kept are the ones the resumed run would log."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import nlpkit
from nlpkit.config.recipe import flatten, settings_hash
from nlpkit.track.state import recall, remember

STATUS = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
MAX_VALUE = 500  # MLflow's param length limit before 2.x (newer servers allow more; a long list is cut here)


class MLflowTracker(nlpkit.Tracker):
    name = "mlflow"
    requires = ("mlflow",)

    def start(self, resume_step: int) -> None:
        output = Path(self.run.folder).parent.resolve()
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{output / 'mlflow.db'}"
        self.client = _client(self.uri)
        saved = recall(self.run.folder, self.name)
        self.resumed = bool(resume_step and saved and saved.get("tracking_uri") == self.uri)
        self.logged: dict[str, int] = {}  # metric -> the highest step already in the MLflow run
        if self.resumed:
            self.run_id = saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            for key in self.client.get_run(self.run_id).data.metrics:
                self.logged[key] = max(m.step for m in self.client.get_metric_history(self.run_id, key))
            return
        default_store = None if "MLFLOW_TRACKING_URI" in os.environ else (output / "mlartifacts").as_uri()
        experiment = _experiment(self.client, str(self.run.settings.get("recipe")), default_store)
        self.run_id = self.client.create_run(experiment, run_name=self.run.name, tags=self._tags()).info.run_id
        remember(self.run.folder, self.name, {"run_id": self.run_id, "experiment_id": experiment,
                                              "tracking_uri": self.uri})

    def _tags(self) -> dict[str, str]:
        run = self.run
        return {"task": run.task, "model": run.model, "plugin": run.plugin, "seed": str(run.seed),
                "dataset": run.dataset, "settings_hash": settings_hash(run.settings),
                "nlpkit.run_folder": str(Path(run.folder).resolve())}

    def log_settings(self, settings: dict[str, Any]) -> None:
        from mlflow.entities import Param

        if self.resumed:  # the first attempt logged them (MLflow refuses to change a param anyway)
            return
        params = [Param(k, str(v)[:MAX_VALUE]) for k, v in flatten(settings).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        points = [Metric(k, v, now, step) for k, v in scalars.items() if step > self.logged.get(k, -1)]
        if points:
            self.client.log_batch(self.run_id, metrics=points)

    def log_results(self, results: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        test = {f"test/{k}": float(v) for k, v in (results.get("test") or {}).items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.log_scalars(int(results.get("steps") or 0), {**test, "train_seconds": results.get("train_seconds", 0.0),
                                                          "train_examples_per_s":
                                                              results.get("train_examples_per_s", 0.0)})
        provenance = {f"provenance.{k}": str(v)[:MAX_VALUE] for k, v in
                      flatten(results.get("provenance") or {}).items()}
        tags = [RunTag(k, v) for k, v in provenance.items()] + [RunTag("main_metric", str(results.get("main_metric")))]
        for i in range(0, len(tags), 100):
            self.client.log_batch(self.run_id, tags=tags[i:i + 100])

    def log_artifacts(self, files: dict[str, Path]) -> None:
        for name, path in files.items():
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path=name)
            else:
                self.client.log_artifact(self.run_id, str(path))

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=STATUS.get(status, "FAILED"))

    @classmethod
    def attach(cls, folder: Path, files: dict[str, Path]) -> None:
        """The comparison report's figures and summary, under ``report/`` in the run's artifacts."""
        saved = recall(folder, cls.name)
        if not saved:
            return
        client = _client(saved["tracking_uri"])
        for name, path in files.items():
            if path.is_dir():
                client.log_artifacts(saved["run_id"], str(path), artifact_path=f"report/{name}")
            else:
                client.log_artifact(saved["run_id"], str(path), artifact_path="report")


def _client(uri: str) -> Any:
    """An MlflowClient for ``uri``; mlflow is imported here, only when a run is tracked, with its usage telemetry
    off unless the user set ``MLFLOW_DISABLE_TELEMETRY`` (offline first: no network post, no wait for it at exit)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment(client: Any, name: str, artifact_location: str | None) -> str:
    """The id of the experiment ``name``, created when new. Runs of one recipe started side by side (``--jobs``)
    may race to create it (or the SQLite store's tables): the loser finds the winner's."""
    for attempt in range(5):
        try:
            found = client.get_experiment_by_name(name)
            if found is not None:
                return found.experiment_id
            return client.create_experiment(name, artifact_location=artifact_location)
        except Exception:
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


@nlpkit.hookimpl
def register_trackers(register):
    register(MLflowTracker)
