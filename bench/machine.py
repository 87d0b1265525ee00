"""The machine a benchmark ran on, recorded next to its figures."""

from __future__ import annotations

import importlib
import os
import platform
import statistics
from typing import Any


def memory() -> tuple[float, float]:
    """(resident memory now, peak resident memory) of this process in MiB, from /proc.

    VmHWM is this process's own peak. getrusage's ru_maxrss is not: on Linux it carries the
    parent's peak across fork and exec, so a child started by a large parent reports that.
    """
    fields = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over runs that each hold seconds, rss_before_mib and peak_rss_mib.

    The increment is the median of each run's own peak less its own start, not the difference
    of two medians taken from different runs.
    """
    med = statistics.median
    return {
        "median_seconds": round(med(r["seconds"] for r in runs), 3),
        "median_rss_before_mib": round(med(r["rss_before_mib"] for r in runs), 1),
        "median_peak_rss_mib": round(med(r["peak_rss_mib"] for r in runs), 1),
        "median_rss_increment_mib": round(
            med(r["peak_rss_mib"] - r["rss_before_mib"] for r in runs), 1
        ),
        "runs": runs,
    }


def describe(*packages: str) -> dict[str, Any]:
    """CPU model, cores, memory, load and niceness now, Python and the given packages' versions.

    Call it before the measured runs: the load average it records is the load they started
    under (another job on the machine shows there).
    """
    with open("/proc/cpuinfo") as fh:
        cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "?")
    with open("/proc/meminfo") as fh:
        ram_kib = next(int(ln.split()[1]) for ln in fh if ln.startswith("MemTotal:"))
    found: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(ram_kib / 2**20, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "niceness": os.nice(0),
        "python": platform.python_version(),
    }
    for name in packages:
        found[name] = importlib.import_module(name).__version__
    if "torch" in packages:
        import torch

        found["torch_threads"] = torch.get_num_threads()
    return found
