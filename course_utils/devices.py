"""Device choice and seeding, the two lines every notebook starts with.

``pick_device()`` prefers CUDA, then Apple's MPS, then the CPU; the environment
variable ``COURSE_DEVICE`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``) overrides it.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["pick_device", "seed_everything", "describe_device"]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(preferred: str | None = None) -> torch.device:
    """Return the device to compute on: ``preferred`` > ``$COURSE_DEVICE`` > cuda > mps > cpu."""
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
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type
