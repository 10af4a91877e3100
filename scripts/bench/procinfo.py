"""Reading a process's CPU time and memory from /proc, and what machine this is."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by *pid* (all its threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def memory_kb(pid: int, field: str = "VmRSS") -> int:
    """A ``/proc/<pid>/status`` memory field (``VmRSS``, ``VmHWM``) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def core_busy(core: int) -> float:
    """Busy (non-idle, non-iowait) CPU seconds of one core since boot, all processes."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            ticks = [int(value) for value in line.split()[1:]]
            return (sum(ticks[:8]) - ticks[3] - ticks[4]) / _TICK
    raise KeyError(core)


@dataclass
class CpuWindow:
    """CPU used by a process between ``start()`` and ``stop()``, as cores busy.

    ``other`` is what everything else ran on the process's *core* meanwhile
    (other people's tests, say): above ~0.1 the numbers were contended.
    """

    pid: int
    core: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    other: float = 0.0

    def start(self) -> None:
        self._cpu0 = cpu_seconds(self.pid)
        self._core0 = core_busy(self.core)
        self._wall0 = time.monotonic()

    def stop(self) -> float:
        self.cpu = cpu_seconds(self.pid) - self._cpu0
        self.wall = time.monotonic() - self._wall0
        busy = core_busy(self.core) - self._core0
        self.other = max(0.0, busy - self.cpu) / self.wall if self.wall > 0 else 0.0
        return self.load

    @property
    def load(self) -> float:
        return self.cpu / self.wall if self.wall > 0 else 0.0


def _command(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict[str, str | int]:
    """What the numbers were measured on."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count() or 0,
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024 / 1024),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_impl": sys.implementation.name,
        "node": _command(["node", "--version"]),
    }
