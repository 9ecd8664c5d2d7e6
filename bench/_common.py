"""Helpers shared by the bench scripts (not a benchmark itself)."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from typing import Any

__all__ = ["torch_machine_info"]


def torch_machine_info(
    torch_threads: int,
    load_average_before: tuple[float, float, float],
    packages: Sequence[str] = ("transformers",),
) -> dict[str, Any]:
    """The ``machine`` block of a torch benchmark's JSON: host, load, versions, CUDA device.

    ``packages`` are further import names whose ``__version__`` is recorded (after torch).
    """
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch_threads,
        "load_average_before": load_average_before,
        "load_average_after": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    for name in packages:
        info[name] = __import__(name).__version__
    info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info
