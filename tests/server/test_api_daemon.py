"""The Prometheus API on a real ``mlwatch daemon``: ``mlwatch import`` through it, then ``promtool query``.

Skipped until the daemon mounts :class:`mlwatch.server.api.PrometheusApi` (wiring in daemon.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from mlwatch.commands.importer import import_command
from mlwatch.commands.query import query_command

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool")


def test_import_and_promtool_against_a_daemon(daemon_factory: Any, tmp_path: Path) -> None:
    d = daemon_factory()
    if requests.get(f"{d.url}/api/v1/status/buildinfo", timeout=5).status_code == 404:
        pytest.skip("the daemon does not mount the Prometheus API yet")
    now = int(time.time()) // 60 * 60
    data = tmp_path / "data.om"
    data.write_text("# TYPE jobs counter\n"
                    + "".join(f'jobs_total{{queue="a"}} {k} {now - 3600 + k * 60}\n' for k in range(60))
                    + "# EOF\n")
    r = CliRunner().invoke(import_command, [str(data), "-c", str(d.config_path), "-q"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "through the running daemon" in r.output and "imported 60 samples" in r.output

    def promtool(*args: str) -> str:
        out = subprocess.run(["promtool", "query", *args], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout

    out = promtool("instant", "--time", str(now - 60), d.url, "jobs_total")
    assert 'jobs_total{queue="a"} => 59' in out
    out = promtool("range", "--start", str(now - 600), "--end", str(now - 60), "--step", "60s", d.url,
                   "rate(jobs_total[5m])")
    assert '{queue="a"} =>' in out and out.count("@[") == 10
    out = promtool("series", "--match", "jobs_total", "--start", str(now - 3600), "--end", str(now), d.url)
    assert '{__name__="jobs_total", queue="a"}' in out
    out = promtool("labels", "--start", str(now - 3600), "--end", str(now), d.url, "queue")
    assert out.split() == ["a"]
    r = CliRunner().invoke(query_command, ["jobs_total", "-c", str(d.config_path), "--time", str(now - 60), "-o",
                                           "json"], catch_exceptions=False)
    ours = json.loads(r.output)
    theirs = requests.get(f"{d.url}/api/v1/query", params={"query": "jobs_total", "time": now - 60}, timeout=5).json()
    assert ours == theirs
