"""Repetitions (`--repeat N`): one figure per metric is the median of N runs, with min and
max; and the provenance recorded with every result (git commit, machine, command line)."""

from __future__ import annotations

import datetime
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

from krabfast.bench.stats import merge_counts

REPO = Path(__file__).resolve().parents[2]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def median_min_max(values: list) -> tuple | None:
    """(median, min, max) of the numeric values, or None when there are none. The median of
    integers stays an int when it is whole."""
    nums = [v for v in values if _is_number(v)]
    if not nums:
        return None
    med = statistics.median(nums)
    if all(isinstance(v, int) for v in nums) and float(med).is_integer():
        med = int(med)
    return med, min(nums), max(nums)


def aggregate(runs: list[dict]) -> dict:
    """One result from N runs of a scenario against one target: `metrics` holds the medians,
    `spread` {metric: [min, max]}, `runs` every run's metrics (and per-run details such as
    `broadcasts`). Other top-level keys are the first run's; error kinds and close codes are
    summed over the runs and `ok` (idle --expect-ticks) is true only if every run was ok."""
    if not runs:
        raise ValueError("no runs")
    out = dict(runs[0])
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run["metrics"] if k not in keys]
    metrics, spread = {}, {}
    for key in keys:
        values = [run["metrics"].get(key) for run in runs]
        mmm = median_min_max(values)
        if mmm is None:
            metrics[key] = next((v for v in values if v is not None), None)
        else:
            metrics[key] = mmm[0]
            spread[key] = [mmm[1], mmm[2]]
    out["metrics"] = metrics
    out["spread"] = spread
    out["repeat"] = len(runs)
    out["runs"] = [{k: v for k, v in run.items() if k not in ("env", "url", "target")}
                   for run in runs]
    out["error_kinds"] = merge_counts(run.get("error_kinds") or {} for run in runs)
    if any("close_codes" in run for run in runs):
        out["close_codes"] = merge_counts(run.get("close_codes") or {} for run in runs)
    if any("ok" in run for run in runs):
        out["ok"] = all(run.get("ok") is not False for run in runs)
    sources = {(run.get("server") or {}).get("cpu_source") for run in runs}
    if "server" in out and "stat" in sources:
        out["server"] = dict(out["server"], cpu_source="stat")
    return out


def paired_ratio_spread(a: dict, b: dict) -> dict[str, list[float]]:
    """{metric: [min, max]} of run-by-run ratios a/b: runs of the same repetition (the
    targets run interleaved, so run i of both shares the machine's state)."""
    out: dict[str, list[float]] = {}
    runs_a, runs_b = a.get("runs") or [], b.get("runs") or []
    for key in a.get("metrics", {}):
        ratios = []
        for ra, rb in zip(runs_a, runs_b):
            va, vb = ra["metrics"].get(key), rb["metrics"].get(key)
            if _is_number(va) and _is_number(vb) and vb != 0:
                ratios.append(va / vb)
        if ratios:
            out[key] = [round(min(ratios), 4), round(max(ratios), 4)]
    return out


# -- provenance ------------------------------------------------------------------------------

def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def git_state() -> dict:
    """The krabfast checkout's commit and whether its tracked files differ from it."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"krabfast_commit": None, "krabfast_dirty": None}
    status = _git("status", "--porcelain") or ""
    lines = [line for line in status.splitlines() if line.strip()]
    tracked = [line for line in lines if not line.startswith("??")]
    return {"krabfast_commit": commit.strip(), "krabfast_dirty": bool(tracked),
            "krabfast_changed_files": len(tracked),
            "krabfast_untracked_files": len(lines) - len(tracked)}


def provenance(argv: list[str] | None = None) -> dict:
    """What produced a result: krabfast commit (dirty?), machine, command line, time."""
    argv = list(sys.argv if argv is None else argv)
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    return {
        **git_state(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": _cpu_model(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "command": command_line(argv),
        "argv": argv,
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def command_line(argv: list[str]) -> str:
    """The command as typed: `krabfast ...` for the console script or `python -m krabfast`."""
    if argv and (Path(argv[0]).name == "krabfast" or argv[0].endswith("krabfast/__main__.py")):
        return shlex.join(["krabfast", *argv[1:]])
    return shlex.join(argv)


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
