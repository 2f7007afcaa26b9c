"""The machine the benchmark runs on: what it is, and whether something else is using it.

On a 2-core box one busy neighbour process is enough to distort every figure (ggml's worker
threads spin at barriers, so a preempted worker stalls the others), so before each request
the run waits, within a budget, for the CPUs to go idle (`Quiet`), and meters how much CPU
other processes used while the request ran (`CpuMeter`).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def describe() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    return {
        "nproc": os.cpu_count(),
        "cpu": names[0] if names else platform.processor(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def busy_cpus(seconds: float = 1.0) -> float:
    """How many CPUs' worth of work the whole machine did over the next `seconds`."""
    meter = CpuMeter([])
    time.sleep(seconds)
    return meter.foreign_cpus()


class Quiet:
    """Waits for idle CPUs before each request, spending at most `budget_s` over the run."""

    def __init__(self, budget_s: float, threshold: float = 0.15) -> None:
        self.left = budget_s
        self.threshold = threshold

    def wait(self) -> float:
        """Block until under `threshold` CPUs are busy or the budget is spent; the last level."""
        start = time.monotonic()
        busy = busy_cpus(0.5)
        if busy > self.threshold:
            print(f"  other processes keep {busy:.2f} CPUs busy; waiting", file=sys.stderr)
        while busy > self.threshold and time.monotonic() - start < self.left:
            busy = busy_cpus(1.0)
        self.left = max(0.0, self.left - (time.monotonic() - start))
        return busy


class CpuMeter:
    """CPUs' worth of work done by processes other than `pids` while the meter runs.

    Figures from /proc are in clock ticks; threads count towards their process.
    """

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self._start = self._read()

    def _read(self) -> tuple[float, int, int]:
        with open("/proc/stat") as f:  # cpu user nice system idle iowait irq softirq steal ...
            times = [int(v) for v in f.readline().split()[1:9]]
        machine_busy = sum(times) - times[3] - times[4]
        own = sum(_process_ticks(pid) for pid in self.pids)
        return time.monotonic(), machine_busy, own

    def foreign_cpus(self) -> float:
        (t0, busy0, own0), (t1, busy1, own1) = self._start, self._read()
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / _TICKS / (t1 - t0))

    def own_cpus(self) -> float:
        (t0, _, own0), (t1, _, own1) = self._start, self._read()
        return (own1 - own0) / _TICKS / (t1 - t0)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a live process has used so far, in seconds."""
    return _process_ticks(pid) / _TICKS


def _process_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime
