"""Shared helpers for benchmark scripts: repeated measurement, the table row, the JSON record, peers.

A benchmark prints one row per figure: figure, ours, peer, ratio, runs, min-max (of ours), and can
append the same as JSON lines to a file (``--json PATH``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Row:
    figure: str
    ours: float
    peer: float | None
    ratio: float | None  # ours / peer, or as the figure defines it (see ``note``)
    runs: int
    lo: float  # min of ours over the runs
    hi: float  # max of ours over the runs
    unit: str = ""
    peer_name: str = ""
    note: str = ""


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--runs", type=int, default=5, help="measured runs (after one warm-up)")
    p.add_argument("--quick", action="store_true", help="smaller data, for a smoke run")
    p.add_argument("--json", type=Path, help="append the rows as JSON lines to this file")
    return p


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` takes."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def row(
    figure: str, ours: Sequence[float], peer: Sequence[float] | None = None, *, unit: str = "",
    peer_name: str = "", note: str = "", ratios: Sequence[float] | None = None,
) -> Row:
    """A row from per-run figures; the ratio is the median of per-run ratios when given, else of medians."""
    o = median(ours)
    p = median(peer) if peer else None
    if ratios:
        r: float | None = median(ratios)
    else:
        r = (o / p) if p else None
    return Row(figure, o, p, r, len(ours), min(ours), max(ours), unit, peer_name, note)


HEADER = f"{'figure':<52} {'ours':>12} {'peer':>12} {'ratio':>7} {'runs':>4}  {'min-max (ours)':<24} unit"


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def emit(rows: Sequence[Row], json_path: Path | None = None) -> None:
    print(HEADER)
    for r in rows:
        rng = f"{_fmt(r.lo)}-{_fmt(r.hi)}"
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        print(f"{r.figure:<52} {_fmt(r.ours):>12} {_fmt(r.peer):>12} {ratio:>7} {r.runs:>4}  {rng:<24} {r.unit}"
              + (f"  [peer: {r.peer_name}]" if r.peer_name else "") + (f"  ({r.note})" if r.note else ""))
    if json_path is not None:
        with json_path.open("a") as f:
            for r in rows:
                f.write(json.dumps(asdict(r)) + "\n")


def ensure_debian_package(binary: str, package: str) -> str:
    """The path of ``binary``, installing the Debian ``package`` first when it is missing."""
    found = shutil.which(binary)
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", package], check=True, stdout=subprocess.DEVNULL)
    found = shutil.which(binary)
    if not found:
        raise SystemExit(f"{binary} is still missing after installing {package}")
    return found


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
