"""The one description of the machine that every benchmark and report prints with its figures:
CPU, cores, load average, torch and its threads, the GPU when there is one, the date.

Figures taken on a shared machine mean little without the load next to them.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def load() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the system has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def load_text() -> str:
    """One line for printed figures: the load average and the cores."""
    la = load()
    if la is None:
        return "load average unknown"
    return f"load average {la[0]:.1f}/{la[1]:.1f} (1/5 min) on {os.cpu_count()} CPUs"


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (workers, ffmpeg)."""
    import resource

    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def machine() -> dict:
    """cpu, cores, torch version and threads, python, date, load (and gpu when CUDA is usable)."""
    import torch

    d = {"cpu": cpu_model(), "cores": cores(), "torch": torch.__version__, "threads": torch.get_num_threads(),
         "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M"), "load": load()}
    if torch.cuda.is_available():
        d["gpu"] = torch.cuda.get_device_name(0)
    return d
