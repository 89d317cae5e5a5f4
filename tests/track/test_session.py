"""The tracking session runs the trackers beside the run: a slow tracker never holds the training loop up, a
checkpoint waits until everything logged before it has been handed over, the run's end waits for the rest, the
arguments are copies, and the cost lands in tracking.json."""

import json
import multiprocessing
import threading
import time

import nlpkit
from nlpkit.contract import RunContext
from nlpkit.track import host
from nlpkit.track.session import TrackingSession

DELAY = 0.05


class Slow(nlpkit.Tracker):
    """A tracker behind a slow network: every call takes DELAY seconds."""

    name = "slow"
    seen: list = []

    def start(self, resume_step):
        time.sleep(DELAY)
        self.thread = threading.current_thread().name

    def log_scalars(self, step, scalars):
        time.sleep(DELAY)
        Slow.seen.append((step, dict(scalars)))

    def checkpoint(self, step):
        Slow.seen.append(("checkpoint", step))


class OneTracker:
    def tracker(self, name):
        assert name == "slow"
        return Slow


def run_context(folder):
    return RunContext(settings={"seed": 1}, folder=folder, name="classification-lstm-seed1", task="classification",
                      task_kind="classification", dataset="toy", model="lstm", plugin="lstm", seed=1,
                      main_metric="accuracy", greater_is_better=True, trackers=("slow",))


def test_a_slow_tracker_does_not_hold_the_run_up_and_nothing_is_lost(tmp_path):
    Slow.seen = []
    session = TrackingSession(run_context(tmp_path), OneTracker())
    started = time.perf_counter()
    session.start()
    metrics = {"loss": 1.0}
    for step in range(1, 11):
        metrics["loss"] = 1.0 / step
        session.train_log(step, metrics)
    queued = time.perf_counter() - started
    assert queued < 5 * DELAY, f"the run waited {queued:.2f} s for a tracker that needs {11 * DELAY:.2f} s"

    session.checkpoint(10)  # waits: every point up to the checkpoint has reached the tracker
    assert [step for step, _ in Slow.seen] == [*range(1, 11), "checkpoint"]
    assert Slow.seen[0][1] == {"train/loss": 1.0}  # the value when it was logged, though the run changed its dict

    session.evaluation(11, {"accuracy": 0.5})
    session.end("finished")
    assert Slow.seen[-1] == (11, {"validation/accuracy": 0.5})
    assert session.trackers.active["slow"].thread.startswith("nlpkit-track-")
    cost = json.loads((tmp_path / "tracking.json").read_text())["cost"]
    assert cost["seconds_in_trackers"] >= 12 * DELAY and cost["seconds_by_call"]["slow.log_scalars"] >= 11 * DELAY
    assert cost["seconds_the_run_waited"] >= 5 * DELAY  # at the checkpoint, for the calls queued before it


def test_a_hosted_session_sends_its_calls_to_the_host_and_waits_only_at_a_checkpoint(tmp_path, monkeypatch):
    """The run's side and the parent's side of hosted tracking, joined by a real pipe (both ends in this process:
    a thread stands for the parent's scheduling loop)."""
    Slow.seen = []
    monkeypatch.setattr(host, "registry", OneTracker)
    parent_end, child_end = multiprocessing.Pipe()
    tracking_host = host.TrackingHost()

    def parent_loop():
        while (message := parent_end.recv()) != "bye":
            assert tracking_host.receive(parent_end, message)

    loop = threading.Thread(target=parent_loop)
    loop.start()
    session = host.HostedSession(run_context(tmp_path), child_end)
    started = time.perf_counter()
    session.start()
    for step in range(1, 11):
        session.train_log(step, {"loss": 1.0 / step})
    assert time.perf_counter() - started < 5 * DELAY  # 11 calls of DELAY each, none waited for
    session.checkpoint(10)
    assert [step for step, _ in Slow.seen] == [*range(1, 11), "checkpoint"]
    session.end("finished")
    child_end.send("bye")
    loop.join()
    tracking_host.close()
    assert not tracking_host.receive(parent_end, ("finished", {}))  # a run's outcome is not the host's
    cost = json.loads((tmp_path / "tracking.json").read_text())["cost"]
    assert cost["where"] == host.WHERE and cost["seconds_by_call"]["slow.log_scalars"] >= 10 * DELAY
    assert cost["seconds_the_run_waited"] >= 5 * DELAY  # at the checkpoint
