import platform

import pytest
import torch

from nlpkit.config.recipe import load_recipe
from nlpkit.errors import NlpkitError
from nlpkit.train import hardware
from nlpkit.train.hardware import keep_freed_memory, resolve_device, speed_paths, use_device, worker_gpu

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


@glibc_only
def test_malloc_keeps_freed_memory_on_glibc(monkeypatch):
    for name in ("GLIBC_TUNABLES", "MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    assert keep_freed_memory.__wrapped__() is True  # both mallopt calls accepted their values


@glibc_only
@pytest.mark.parametrize("name, value", [("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0"),
                                         ("MALLOC_ARENA_MAX", "2")])
def test_a_users_own_malloc_settings_are_left_alone(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert keep_freed_memory.__wrapped__() is False


# ----------------------------------------------------------------------------------- the speed rule

@pytest.mark.parametrize("device, world", [("cpu", 1), ("cpu", 2), ("cuda", 1), ("cuda", 4), ("mps", 1)])
def test_cpu_speed_paths_only_on_one_cpu_process(device, world):
    paths = speed_paths(device, world)
    one_cpu = device == "cpu" and world == 1
    assert paths.fast_encoder == paths.fast_optimizer == paths.cheap_dropout == one_cpu
    assert paths.attention == ("eager" if one_cpu else "sdpa")
    assert paths.keep_freed_memory == (device == "cpu")  # host allocator tuning, numerics untouched
    assert paths.fused_adamw == paths.pin_memory == paths.prefetch == (device == "cuda")
    assert not paths.tf32  # no CUDA here: the capability check says no (a GPU from Ampere on says yes)


def test_the_rule_reads_the_run_device_and_the_process_count(monkeypatch):
    monkeypatch.setattr(hardware, "_run_device", torch.device("cpu"))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert speed_paths().fast_encoder
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun sets it before anything is built
    assert not speed_paths().fast_encoder and speed_paths().world == 2


# ----------------------------------------------------------------------------------- devices honoured

def fake_gpus(monkeypatch, n: int) -> list:
    """Pretend torch sees ``n`` CUDA GPUs; returns the devices set_device was called with."""
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: chosen.append(torch.device(d)))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    return chosen


@pytest.mark.parametrize("choice", ["cuda", "cuda:0", "mps", "tpu", "cuda:x"])
def test_an_explicit_device_that_is_not_there_is_an_error_naming_the_key(monkeypatch, choice):
    fake_gpus(monkeypatch, 0)
    monkeypatch.setattr(hardware, "_mps_available", lambda: False)
    with pytest.raises(NlpkitError, match=r"train\.device: .*" + choice.replace(":", ".")):
        resolve_device(choice)


def test_auto_picks_what_is_there(monkeypatch):
    fake_gpus(monkeypatch, 0)
    monkeypatch.setattr(hardware, "_mps_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(hardware, "_mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    fake_gpus(monkeypatch, 2)
    assert resolve_device("auto") == torch.device("cuda")


def test_cuda_n_is_the_gpu_used(monkeypatch):
    chosen = fake_gpus(monkeypatch, 2)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert use_device("cuda:1") == torch.device("cuda", 1) and chosen == [torch.device("cuda", 1)]
    with pytest.raises(NlpkitError, match="cuda:2.*2 CUDA GPUs"):
        use_device("cuda:2")


def test_a_recipe_asking_for_a_missing_gpu_stops_before_anything_is_created(tmp_path, monkeypatch):
    fake_gpus(monkeypatch, 0)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\ntask: {name: classification, dataset: toy_topics}\nmodels: {lstm: {}}\n"
                      f"output: {tmp_path / 'runs'}\ntrain: {{device: cuda}}\n")
    with pytest.raises(NlpkitError, match=r"line 5: 'train.device'.*'cuda' asked for, but this machine has no CUDA"):
        load_recipe(recipe)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("visible, slots, want", [
    ("2,3", [0, 1, 2], ["2", "3", "2"]),  # the inherited GPUs, never 0 and 1
    ("GPU-aa, GPU-bb", [0, 1], ["GPU-aa", "GPU-bb"]),  # UUIDs as the user wrote them
    ("5,-1,6", [0, 1], ["5", "5"]),  # CUDA stops at an invalid entry
    ("", [0], [None]),  # no GPU visible
])
def test_jobs_workers_take_gpus_from_an_inherited_cuda_visible_devices(visible, slots, want):
    assert [worker_gpu(s, visible=visible) for s in slots] == want


def test_jobs_workers_without_cuda_visible_devices_take_the_gpus_torch_sees(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert [worker_gpu(s, count=2) for s in range(3)] == ["0", "1", "0"]
    assert worker_gpu(0, count=0) is None


def test_a_runs_child_gets_its_gpu_from_the_inherited_list(monkeypatch):
    from nlpkit.run import pool as jobs

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,7")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [jobs.child_gpu(slot, jobs=2) for slot in range(3)] == ["4", "7", "4"]
    assert jobs.child_gpu(1, jobs=1) is None  # one at a time: the child inherits every GPU


def test_cuda_peak_memory_is_reset_at_a_runs_start(monkeypatch):
    reset = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d: reset.append(d))
    hardware.reset_peak_memory(torch.device("cpu"))
    hardware.reset_peak_memory(torch.device("cuda", 1))
    assert reset == [torch.device("cuda", 1)]


def test_predict_runs_on_the_runs_device_when_it_is_here(tmp_path, monkeypatch):
    from nlpkit.run.predict import run_device

    (tmp_path / "results.json").write_text('{"device_type": "cuda"}')
    fake_gpus(monkeypatch, 0)
    assert run_device(tmp_path) == torch.device("cpu")  # trained on a GPU, predicting on a laptop
    with pytest.raises(NlpkitError, match="--device: 'cuda' asked for"):
        run_device(tmp_path, "cuda")
    fake_gpus(monkeypatch, 1)
    assert run_device(tmp_path) == torch.device("cuda")
    assert run_device(tmp_path, "cpu") == torch.device("cpu")
