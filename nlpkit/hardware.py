"""What machine a run is on, and what that means for device and precision choices.

bf16 autocast pays on GPUs and on CPUs with native bf16 (AVX512-BF16 / AMX); on other CPUs it is
emulated and several times slower, so "auto" picks fp32 there.
"""

from __future__ import annotations

import ctypes
import os
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
    threads = torch.get_num_threads()
    bf16 = ", native bf16" if cpu_has_native_bf16() else ""
    return f"{cpu_name()} ({threads} thread{'s' * (threads != 1)}{bf16})"


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


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


@lru_cache
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed buffers for the next step instead of handing them back to the OS.

    A training step frees and re-allocates the same activation buffers every step. By default glibc serves
    the big ones with mmap, unmaps them on free and trims the heap's top, so every step faults them back in
    page by page, zero-filled (13% of the CPU time of the Multi30k recipe was system time). Serving blocks
    up to 32 MiB (the ceiling of glibc's own dynamic threshold) from the heap and never trimming it, 150 steps
    of the Multi30k attention model on an AMD EPYC (2 cores) took 8.9M page faults instead of 13M, 23 s of
    system time instead of 35, and trained 5-6% more tokens/s at the same peak RSS. (128-256 MiB, which also
    keeps the 72 MB logits buffers, trained 14-17% faster but raised peak RSS by 4-7%: not taken.)
    A no-op off glibc, or when the user tuned malloc through the environment. Returns whether it took."""
    if platform.libc_ver()[0] != "glibc" or "malloc" in os.environ.get("GLIBC_TUNABLES", "") \
            or any(name.startswith("MALLOC_") for name in os.environ):
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()
