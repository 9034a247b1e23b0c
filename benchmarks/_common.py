"""Shared helpers for benchmark scripts: repeated measurement, the table row, the JSON record, peers, processes.

Every script takes ``--quick``, ``--runs N`` and ``--json PATH`` and prints one row per figure: figure,
ours, peer, ratio, runs, min-max (of ours); ``--json`` appends the same rows as JSON lines to PATH
(the suite, ``python -m benchmarks``, collects them from there).

Servers a script starts go through :func:`start_process`: each is stopped when the script ends, by the
``finally`` of its caller, by :func:`stop_all` (registered with ``atexit``) and on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType


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
    better: str = "higher"  # "higher" or "lower": which way ``ours`` improves
    target: str = ""  # the BENCHMARKS.md target, e.g. ">= 1.5x" or "<= 150 MB"
    ok: bool | None = None  # whether the target is met, when the script can tell


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    peer_name: str = "", note: str = "", ratios: Sequence[float] | None = None, better: str = "higher",
    target: str = "", ok: bool | None = None,
) -> Row:
    """A row from per-run figures; the ratio is the median of per-run ratios when given, else of medians."""
    o = median(ours)
    p = median(peer) if peer else None
    if ratios:
        r: float | None = median(ratios)
    else:
        r = (o / p) if p else None
    return Row(figure, o, p, r, len(ours), min(ours), max(ours), unit, peer_name, note, better, target, ok)


HEADER = f"{'figure':<52} {'ours':>12} {'peer':>12} {'ratio':>7} {'runs':>4}  {'min-max (ours)':<24} unit"


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


_fmt = fmt


def emit(rows: Sequence[Row], json_path: Path | None = None) -> None:
    print(HEADER)
    for r in rows:
        rng = f"{fmt(r.lo)}-{fmt(r.hi)}"
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        verdict = "" if r.ok is None else f"  [{'meets' if r.ok else 'MISSES'} target {r.target}]"
        print(f"{r.figure:<52} {fmt(r.ours):>12} {fmt(r.peer):>12} {ratio:>7} {r.runs:>4}  {rng:<24} {r.unit}"
              + (f"  [peer: {r.peer_name}]" if r.peer_name else "") + (f"  ({r.note})" if r.note else "") + verdict)
    sys.stdout.flush()
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        with json_path.open("a") as f:
            for r in rows:
                f.write(json.dumps(asdict(r)) + "\n")


def ensure_debian_package(binary: str, package: str) -> str:
    """The path of ``binary``, installing the Debian ``package`` first when it is missing.

    As CI does (.ci/run): ``policy-rc.d`` forbids the package's service from starting; benchmarks start
    their own instances on 127.0.0.1 with temporary data.
    """
    found = shutil.which(binary)
    if found:
        return found
    if not shutil.which("apt-get") or os.geteuid() != 0:
        raise SystemExit(f"{binary} is missing: install the Debian package {package} (apt-get install {package})")
    print(f"{binary} is missing: installing the Debian package {package} (its service is not started) ...",
          file=sys.stderr, flush=True)
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = not policy.exists()
    if made_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package]
        if subprocess.run(install, check=False, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, stdout=subprocess.DEVNULL)
            subprocess.run(install, check=True, env=env, stdout=subprocess.DEVNULL)
    finally:
        if made_policy:
            policy.unlink(missing_ok=True)
    found = shutil.which(binary)
    if not found:
        raise SystemExit(f"{binary} is still missing after installing {package}")
    return found


PEERS = {  # binary -> Debian package
    "prometheus-pushgateway": "prometheus-pushgateway",
    "mtail": "mtail",
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "victoria-metrics": "victoria-metrics",
    "wrk": "wrk",
}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until ``url`` answers below 500; fails early when ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not answer within {timeout:.0f}s")


_STARTED: list[subprocess.Popen[bytes]] = []


def start_process(argv: Sequence[str], *, log: Path | None = None, cwd: Path | None = None,
                  env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a server; it is stopped by :func:`stop` / :func:`stop_all` (also at exit and on SIGTERM)."""
    out = log.open("ab") if log else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=out, cwd=cwd,
                                env={**os.environ, **(env or {})})
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
    _STARTED.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc in _STARTED:
        _STARTED.remove(proc)


def stop_all() -> None:
    for proc in list(reversed(_STARTED)):
        stop(proc)


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # runs the callers' finally blocks, then atexit


atexit.register(stop_all)
signal.signal(signal.SIGTERM, _on_signal)


def start_mlwatch(tmp: Path, extra_yaml: str = "", *, name: str = "mlwatch") -> tuple[subprocess.Popen[bytes], str, Path]:
    """A real ``mlwatch daemon`` on a free loopback port with its own database in ``tmp``: (process, base URL, db)."""
    port = free_port()
    db = tmp / f"{name}.db"
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(f"storage:\n  url: sqlite:///{db}\nserver:\n  listen: 127.0.0.1:{port}\n" + extra_yaml)
    proc = start_process([sys.executable, "-m", "mlwatch.cli", "daemon", "-c", str(cfg)], log=tmp / f"{name}.log",
                         cwd=tmp)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/-/ready", proc=proc)
    except BaseException:
        stop(proc)
        raise
    return proc, base, db


def get_json(url: str, timeout: float = 30) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def proc_rss_bytes(pid: int) -> int:
    """Resident set size of a process (VmRSS from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise SystemExit(f"no VmRSS for pid {pid}")


_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK
