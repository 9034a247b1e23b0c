"""Real Prometheus-ecosystem servers for tests: started on 127.0.0.1 with temporary data, always stopped."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import free_port, wait_http


def need(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/bin/{binary}" if Path(f"/usr/bin/{binary}").exists() else None)
    if path is None:
        pytest.skip(f"{binary} is not installed (.ci/run installs Debian's package)")
    return path


class Prometheus:
    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.proc = proc
        self.log = log

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        r.raise_for_status()
        return r.json()["data"]["result"]  # type: ignore[no-any-return]

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll an instant query until it returns a non-empty result."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            res = self.query(expr)
            if res:
                return res
            time.sleep(0.2)
        raise AssertionError(f"Prometheus never returned a result for {expr!r}:\n{self.log.read_text()[-3000:]}")


@contextlib.contextmanager
def run_prometheus(tmp: Path, scrape_configs: list[dict[str, Any]]) -> Iterator[Prometheus]:
    binary = need("prometheus")
    port = free_port()
    cfg = tmp / "prometheus.yml"
    # JSON is YAML: no YAML writer needed.
    cfg.write_text(json.dumps({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                                   "scrape_configs": scrape_configs}))
    data = tmp / "prom-data"
    data.mkdir()
    log = tmp / "prometheus.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [binary, f"--config.file={cfg}", f"--storage.tsdb.path={data}", f"--web.listen-address=127.0.0.1:{port}",
             "--web.enable-admin-api", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=err,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", timeout=30, proc=proc)
        yield Prometheus(f"http://127.0.0.1:{port}", proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
