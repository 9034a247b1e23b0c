"""Test helpers shared by fixtures and tests: free ports, waiting for HTTP, a real daemon subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")


@dataclass
class DaemonProcess:
    proc: subprocess.Popen[bytes]
    port: int
    db_path: Path
    config_path: Path
    stderr_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def start_daemon(tmp_path: Path, config_text: str = "", *, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, port: int | None = None, wait: bool = True) -> DaemonProcess:
    """Start a real ``mlwatch daemon`` subprocess on a free loopback port with its own database."""
    port = port or free_port()
    db_path = tmp_path / "mlwatch.db"
    config_path = tmp_path / "mlwatch.yaml"
    if not config_path.exists() or config_text:
        config_path.write_text(
            f"storage:\n  url: sqlite:///{db_path}\nserver:\n  listen: 127.0.0.1:{port}\n" + config_text
        )
    stderr_path = tmp_path / f"daemon-{port}-{time.monotonic_ns()}.log"
    cmd = [sys.executable, "-m", "mlwatch.cli", "daemon", "-c", str(config_path), *(extra_args or [])]
    with stderr_path.open("wb") as err:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=tmp_path, env={**os.environ, **(env or {})},
        )
    d = DaemonProcess(proc, port, db_path, config_path, stderr_path)
    if wait:
        try:
            wait_http(f"{d.url}/-/ready", proc=proc)
        except Exception:
            d.stop(signal.SIGKILL)
            raise RuntimeError(f"daemon did not start:\n{d.stderr()}") from None
    return d


