"""What every benchmark result file records about how it was made.

The command line, the UTC time, package versions, the git revision, the host and the load
averages: the machines are shared and noisy, so a result without its load cannot be read.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("jax", "jaxlib", "optax", "numpy", "ase", "quippy-ase", "matscipy")


def command() -> str:
    """The command that is running, as a user would type it from the repository root."""
    return shlex.join([Path(sys.executable).name, *sys.argv])


def utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def load() -> list[float]:
    """1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def versions(packages=PACKAGES) -> dict:
    """Python, the installed versions of `packages` (None where absent) and `git describe`."""
    out = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    try:
        out["mtpjax_git"] = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
            text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        out["mtpjax_git"] = None
    return out


def host() -> dict:
    """Host name, platform, CPU model, core count, this process's affinity, memory (GiB)."""
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = round(kb / 2**20, 1)
    except (OSError, AttributeError):
        pass
    return {"hostname": platform.node(), "platform": platform.platform(), "cpu_model": cpu,
            "cpus": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0)),
            "memory_GiB": mem}


def header() -> dict:
    """The provenance block of a result file (call it before the measurements start)."""
    return {"command": command(), "started_utc": utc(), "versions": versions(),
            "host": host(), "load_before": load()}
