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
from dataclasses import dataclass
from functools import lru_cache

import torch

from nlpkit.errors import NlpkitError


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


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def device_problem(choice: str) -> str | None:
    """Why the device ``choice`` (a recipe's ``train.device``) cannot be used here, or None when it can.

    An explicit device that is not there must stop the run before anything is created: silently training
    on the CPU instead would record figures (and a precision) the user never asked for."""
    if choice == "auto":
        return None
    try:
        device = torch.device(choice)
    except (RuntimeError, ValueError):
        return f"'{choice}' is not a device (use auto, cpu, cuda, cuda:N or mps)"
    if device.type == "cpu":
        return None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return f"'{choice}' asked for, but this machine has no CUDA GPU that torch can use (use auto or cpu)"
        if device.index is not None and device.index >= count:
            gpus = f"{count} CUDA GPU{'s' * (count > 1)} (cuda:0..{count - 1})"
            return f"'{choice}' asked for, but this machine has {gpus}"
        return None
    if device.type == "mps":
        return None if _mps_available() else f"'{choice}' asked for, but Apple's MPS is not available here"
    return f"'{choice}' is not a device nlpkit trains on (use auto, cpu, cuda, cuda:N or mps)"


def resolve_device(choice: str = "auto") -> torch.device:
    """The device of ``train.device``: ``auto`` picks what is there (CUDA, then MPS, then the CPU); an explicit
    device that is not there is an error naming the key."""
    problem = device_problem(choice)
    if problem:
        raise NlpkitError(f"train.device: {problem}")
    if choice != "auto":
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def world_size() -> int:
    """Processes training this run together (torchrun / accelerate set WORLD_SIZE before anything starts)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


@dataclass(frozen=True)
class SpeedPaths:
    """Which implementation a run uses where nlpkit has a CPU-specific fast one and a stock one.

    The CPU paths were measured on CPUs (benchmarks/BERT_CPU_NOTES.md) and are wrong or slow elsewhere: the
    fast BERT encoder's word embedding accumulates its gradient outside autograd (DDP would never all-reduce
    it), FastAdamW and the cheap dropout masks are CPU kernels, glibc tuning is about host memory. On a GPU,
    and under DDP, the stock paths are the fast and correct ones."""

    device_type: str
    world: int
    fast_encoder: bool  # plugins/models/bert/fast_encoder.py's FastBertEncoder for BERT (cheap dropout, sparse rows)
    fast_optimizer: bool  # FastAdamW: sparse-row updates, clipping folded into the step (deferred gradients)
    cheap_dropout: bool  # fast_dropout's 16-bit masks instead of F.dropout
    keep_freed_memory: bool  # glibc malloc tuning (keep_freed_memory)
    fused_adamw: bool  # torch.optim.AdamW(fused=True): one kernel per step on the GPU
    attention: str  # attn_implementation for transformers encoders: "eager" (a 1-process CPU run) or "sdpa"
    tf32: bool  # TF32 matmuls for the fp32 parts of a mixed-precision run (GPUs from Ampere on)
    pin_memory: bool  # batches copied through pinned memory, non-blocking
    prefetch: bool  # the next batch collated and copied while the current one runs


_run_device: torch.device | None = None  # set by use_device() for the run this process is working on


def use_device(choice: str | torch.device) -> torch.device:
    """Resolve and remember the run's device (``train.device``), for the speed rule of code that is not told it,
    such as a model's ``create``/``load``; on CUDA also make it the current device, so ``cuda:1`` means GPU 1."""
    global _run_device
    device = choice if isinstance(choice, torch.device) else resolve_device(choice)
    if device.type == "cuda" and world_size() > 1:  # DDP: each process takes its local rank's GPU (accelerate)
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    _run_device = device
    return device


def speed_paths(device: str | torch.device | None = None, world: int | None = None) -> SpeedPaths:
    """The one rule: CPU-specific speed paths on a single CPU process only, stock paths on CUDA/MPS or under DDP.

    ``device`` defaults to the run's (:func:`use_device`), else what ``auto`` picks; ``world`` to the processes
    of this run (:func:`world_size`)."""
    if device is None:
        device = _run_device if _run_device is not None else resolve_device("auto")
    kind = torch.device(device).type
    world = world_size() if world is None else world
    cpu, single = kind == "cpu", world == 1
    cuda = kind == "cuda"
    tf32 = cuda and torch.cuda.is_available() and torch.cuda.get_device_capability(torch.device(device))[0] >= 8
    return SpeedPaths(device_type=kind, world=world, fast_encoder=cpu and single, fast_optimizer=cpu and single,
                      cheap_dropout=cpu and single, keep_freed_memory=cpu, fused_adamw=cuda,
                      attention="eager" if cpu and single else "sdpa", tf32=tf32, pin_memory=cuda, prefetch=cuda)


def worker_gpu(slot: int, visible: str | None = None, count: int | None = None) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` value for ``--jobs`` worker ``slot``: one GPU of those this process may use,
    round robin, or None without GPUs.

    The GPUs are the inherited ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs, as the user wrote them) when it is
    set, so ``CUDA_VISIBLE_DEVICES=2,3 nlpkit run --jobs 2`` puts the workers on GPUs 2 and 3, never 0 and 1;
    otherwise the ``count`` GPUs torch sees (``torch.cuda.device_count()``)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    if visible is not None:
        gpus = []
        for gpu in visible.split(","):
            if gpu.strip() in ("", "-1"):  # CUDA stops at the first empty or invalid entry: none after it are seen
                break
            gpus.append(gpu.strip())
    else:
        count = torch.cuda.device_count() if count is None else count
        gpus = [str(i) for i in range(count)]
    return gpus[slot % len(gpus)] if gpus else None


def resolve_precision(choice: str, device: torch.device, prefers_fp32_on_cpu: bool = False) -> str:
    """'auto' -> bf16 where it is fast (bf16-capable GPU, or a CPU with native bf16), fp16 on older GPUs, else fp32."""
    if choice != "auto":
        return choice
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_native_bf16() and not prefers_fp32_on_cpu:
        return "bf16"
    return "fp32"


def sequence_multiple(device_type: str = "cpu") -> int:
    """Pad a batch's sequence length to a multiple of this, on the current device and autocast precision.

    On a CPU under bf16/fp16 autocast torch hands matmuls to oneDNN, which builds (JIT) and caches a kernel per
    shape; its cache holds 1024. Length-bucketed batches have ~100 distinct lengths and a BERT step ~12 GEMM
    shapes per length, so the cache thrashes: on an Intel Xeon with AMX (2 cores), linear forward + backward
    over the MiniLM shapes with 108 lengths ran 9.8k tokens/s at 2.0 GB RSS against 55k tokens/s at 0.4 GB with
    lengths padded to a multiple of 8 (16 shapes; ~3.5 padding tokens per example). fp32 matmuls (MKL) have no
    per-shape cost there, so fp32 keeps exact lengths."""
    if device_type == "cpu" and torch.is_autocast_enabled("cpu") and \
            torch.get_autocast_dtype("cpu") in (torch.bfloat16, torch.float16):
        return 8
    return 1


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
    The price is in the peak: freed blocks stay resident, and how well later blocks fit into them depends on the
    order threads happen to allocate in. The AG News lstm (fp32, Intel Xeon with AMX, 2 cores, one run at a time)
    trained in 26-30 s with this at a peak RSS of 1,012-1,073 MB over five repeats of the same run (±3%, the figures
    a run reports vary that much from process to process), against 57-58 s at 668-670 MB with glibc's defaults.
    A no-op off glibc, or when the user tuned malloc through the environment. Returns whether it took."""
    if platform.libc_ver()[0] != "glibc" or "malloc" in os.environ.get("GLIBC_TUNABLES", "") \
            or any(name.startswith("MALLOC_") for name in os.environ):
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def peak_rss_mb() -> float:
    """Peak resident memory of this process since it started (MB): ru_maxrss, which nothing can reset."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024


def reset_peak_memory(device: torch.device) -> None:
    """Start a run's CUDA peak-memory count at its own start (the CPU's RSS peak cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _vm_hwm_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class PeakMemory:
    """The peak memory of one run, measured so that nothing that ran before it in the process counts.

    ``start()`` resets the kernel's resident high-water mark (writing "5" to /proc/self/clear_refs, Linux)
    and CUDA's peak statistics; ``mb(device)`` then reads VmHWM (or the CUDA peak). Where the reset is not
    possible the figure falls back to ru_maxrss, the process's high-water mark since it began, and ``how``
    says so: in a run's own child process (the default, see nlpkit.run.pool) that is still the run's own figure,
    in a process that ran other runs before (torchrun, in-process runs) it may be theirs."""

    def __init__(self) -> None:
        self.reset = False
        self.own_process = False

    def start(self, own_process: bool = False) -> PeakMemory:
        """Begin measuring; ``own_process``: this process was started for this one run."""
        self.own_process = own_process
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.reset = _vm_hwm_mb() is not None
        except OSError:
            self.reset = False
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()
        return self

    def mb(self, device: torch.device) -> float:
        if device.type == "cuda":
            return torch.cuda.max_memory_allocated(device) / 2**20
        hwm = _vm_hwm_mb() if self.reset else None
        return hwm if hwm is not None else peak_rss_mb()

    def how(self, device: torch.device) -> str:
        """How ``mb`` was measured, for results.json beside the figure."""
        where = "in the run's own process" if self.own_process else "in a process shared with other runs"
        if device.type == "cuda":
            return f"torch.cuda.max_memory_allocated, reset when the run started ({where})"
        if self.reset and _vm_hwm_mb() is not None:
            return f"resident high-water mark (VmHWM), reset when the run started ({where})"
        if self.own_process:
            return "ru_maxrss of the run's own process"
        return ("ru_maxrss: the high-water mark of a process shared with other runs (the kernel's could not be "
                "reset), so it may include memory of runs before this one")


def peak_memory_mb(device: torch.device) -> float:
    """The process's peak so far (see :class:`PeakMemory` for one run's own)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()
