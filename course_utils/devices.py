"""Device choice and seeding, the two lines every notebook starts with.

``pick_device()`` prefers CUDA, then Apple's MPS, then the CPU; the environment
variable ``COURSE_DEVICE`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``) overrides it.

``pick_device()`` also applies the course's one thread policy, ``COURSE_THREADS``
(default 1): how many CPU threads torch uses. One thread is the safe default on a
2-core laptop that also runs a browser: ``benchmarks/threads.py`` (report in
``benchmarks/out/threads.md``) finds 2 threads somewhat faster on an idle machine but
several times slower as soon as another process keeps a core busy, because torch's
OpenMP threads wait for each other at every operation. ``COURSE_THREADS=0`` keeps
torch's own default; ``COURSE_THREADS=2`` suits an otherwise idle machine.

On a Linux CPU, ``pick_device()`` also applies the course's memory setting,
:func:`keep_freed_cpu_memory` (``COURSE_MALLOC_TUNING``, default on): glibc's malloc keeps
freed memory in the process instead of returning it to the system. MAML and Reptile allocate and
free one task's activations per task; by default glibc hands large freed blocks back and the next
task page-faults them in again, which cost about a third more CPU time for Conv-4 with meta-batch
32 (``benchmarks/maml_speed.py``). The process's memory then stays at its peak. It is a setting
of the whole process, which is why it lives here, beside the thread policy, and is applied where
a notebook picks its device, not inside a gradient function. ``COURSE_MALLOC_TUNING=0`` leaves
glibc's defaults alone (a process that has already applied it keeps it: glibc offers no way back).
"""
from __future__ import annotations

import ctypes
import os
import platform
import random

import numpy as np
import torch

__all__ = ["pick_device", "seed_everything", "describe_device", "apply_thread_policy", "thread_setting",
           "keep_freed_cpu_memory"]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def thread_setting() -> int:
    """``$COURSE_THREADS`` as a number: 1 by default, 0 for torch's own default."""
    value = os.environ.get("COURSE_THREADS", "1").strip() or "1"
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise ValueError(f"COURSE_THREADS={value!r} is not a thread count: use 1 (the default), 2, ... "
                         "or 0 for torch's own default.")
    return n


_DEFAULT_THREADS = torch.get_num_threads()


def apply_thread_policy() -> int:
    """Set torch's CPU threads from ``COURSE_THREADS`` and return the number now in use."""
    n = thread_setting()
    torch.set_num_threads(n if n > 0 else _DEFAULT_THREADS)
    return torch.get_num_threads()


_MALLOC_TUNED = False


def keep_freed_cpu_memory() -> bool:
    """Ask glibc's malloc (Linux) to keep freed memory in the process instead of returning it.

    Raises malloc's trim and mmap thresholds to 1 GiB, for the whole process (see the module
    docstring). Once per process; returns True if the setting is in effect. ``COURSE_MALLOC_TUNING=0``
    opts out (then nothing is changed and it returns False).
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    if platform.system() != "Linux" or os.environ.get("COURSE_MALLOC_TUNING", "1").strip() == "0":
        return False
    try:
        libc = ctypes.CDLL(None)
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_trim_threshold, 1 << 30) == 1 and libc.mallopt(m_mmap_threshold, 1 << 30) == 1
    except (OSError, AttributeError):  # not glibc
        return False
    _MALLOC_TUNED = bool(ok)
    return _MALLOC_TUNED


def pick_device(preferred: str | None = None) -> torch.device:
    """Return the device to compute on: ``preferred`` > ``$COURSE_DEVICE`` > cuda > mps > cpu.

    Also applies the process settings of the module docstring: the thread policy
    (``COURSE_THREADS``) and, when the device is a CPU, :func:`keep_freed_cpu_memory`.
    """
    apply_thread_policy()
    device = _choose(preferred)
    if device.type == "cpu":
        keep_freed_cpu_memory()
    return device


def _choose(preferred: str | None) -> torch.device:
    name = preferred or os.environ.get("COURSE_DEVICE", "").strip()
    if name:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"Device {name!r} was asked for (COURSE_DEVICE or argument), but CUDA "
                             "is not available here. Unset COURSE_DEVICE or set it to 'cpu'.")
        if device.type == "mps" and not _mps_available():
            raise ValueError(f"Device {name!r} was asked for, but MPS is not available here. "
                             "Unset COURSE_DEVICE or set it to 'cpu'.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices) and return a CPU generator seeded with ``seed``.

    The returned generator is what the course's samplers take, so a whole run
    is repeatable from one number.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def describe_device(device: torch.device | None = None) -> str:
    """One line naming the device, for notebook set-up cells and benchmark tables."""
    device = device or pick_device()
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads{', malloc keeps freed memory' if _MALLOC_TUNED else ''})"
    return device.type
