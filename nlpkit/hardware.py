"""What machine a run is on, and what that means for device and precision choices.

bf16 autocast pays on GPUs and on CPUs with native bf16 (AVX512-BF16 / AMX); on other CPUs it is
emulated and several times slower, so "auto" picks fp32 there.
"""

from __future__ import annotations

import platform
import resource
import sys
from functools import lru_cache

import torch


@lru_cache
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@lru_cache
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_native_bf16() -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def device_description(device: torch.device) -> str:
    """The hardware that goes beside every figure: GPU name, or CPU model and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({torch.get_num_threads()} threads{', native bf16' if cpu_has_native_bf16() else ''})"


def resolve_device(choice: str = "auto") -> torch.device:
    if choice != "auto":
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_precision(choice: str, device: torch.device, prefers_fp32_on_cpu: bool = False) -> str:
    """'auto' -> bf16 where it is fast (bf16-capable GPU, or a CPU with native bf16), fp16 on older GPUs, else fp32."""
    if choice != "auto":
        return choice
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_native_bf16() and not prefers_fp32_on_cpu:
        return "bf16"
    return "fp32"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()
