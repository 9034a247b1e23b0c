"""Smoke test: `mlwatch tui` in a real terminal (tmux) against a live daemon with pushed data.

Finds the firing alert on screen, and silences it from the TUI through the daemon's /api/v2/silences.
Textual draws on stderr: it is never redirected here.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import DaemonProcess

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

CONFIG = """
evaluation_interval: 1s
alerting: {staleness_alerts: {enabled: false}}
rules:
  - alert: AccuracyLow
    expr: ai_model_accuracy < 0.9
    labels: {severity: critical}
    annotations: {summary: "accuracy of {{ $labels.model }} is low"}
"""


class Tmux:
    def __init__(self, tmp_path: Path) -> None:
        self.socket = f"mlwatch-test-{uuid.uuid4().hex[:8]}"
        self.tmp_path = tmp_path

    def run(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True, timeout=20
        ).stdout

    def start(self, command: list[str], width: int = 120, height: int = 40) -> None:
        # keep the pane after an early exit so its last words can be read
        self.run(
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            str(width),
            "-y",
            str(height),
            f"cd {shlex.quote(str(self.tmp_path))} && {shlex.join(command)}; sleep 30",
        )

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "t")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "t", *keys)

    def wait_for(self, check: Callable[[str], bool], timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if check(text):
                return text
            time.sleep(0.3)
        raise AssertionError(f"not on screen within {timeout}s:\n{text}")

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], check=False, capture_output=True, timeout=20)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    t = Tmux(tmp_path)
    yield t
    t.kill()


def _mlwatch() -> list[str]:
    exe = Path(sys.executable).with_name("mlwatch")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mlwatch.cli"]


def test_tui_against_a_live_daemon(daemon_factory: Callable[..., DaemonProcess], tmux: Tmux) -> None:
    d = daemon_factory(CONFIG)
    body = 'ai_model_accuracy{model="fraud"} 0.8\nai_model_accuracy{model="churn"} 0.95\n'
    assert requests.put(f"{d.url}/metrics/job/ml", data=body, timeout=10).status_code in (200, 202)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        alerts = requests.get(f"{d.url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        if any(a["state"] == "firing" for a in alerts):
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"the alert did not fire: {alerts}")

    tmux.start([*_mlwatch(), "tui", "-c", str(d.config_path), "--refresh", "1s"])
    text = tmux.wait_for(lambda s: "AccuracyLow" in s and "FIRING" in s)
    assert "ai_model_accuracy" in text

    tmux.keys("3")
    tmux.wait_for(lambda s: "Active alerts" in s and "AccuracyLow" in s)
    tmux.keys("s")
    tmux.wait_for(lambda s: "Silence alerts matching" in s)
    tmux.keys("-l", "smoke test")
    tmux.keys("Enter")
    tmux.wait_for(lambda s: "silenced" in s)
    silences = requests.get(f"{d.url}/api/v2/silences", timeout=5).json()
    assert [s["comment"] for s in silences] == ["smoke test"]
    tmux.keys("q")


def test_tui_against_a_live_demo(tmp_path: Path, tmux: Tmux) -> None:
    """`mlwatch demo` in the background, `mlwatch tui` on its database: the firing alert shows up."""
    from tests.helpers import free_port, wait_http

    port = free_port()
    work = tmp_path / "demo"
    with (tmp_path / "demo.log").open("wb") as err:
        demo = subprocess.Popen([*_mlwatch(), "demo", "--speed", "10", "--dir", str(work), "--listen", f"127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", timeout=30, proc=demo)
        tmux.start([*_mlwatch(), "tui", "--db", f"sqlite:///{work / 'mlwatch.db'}", "--refresh", "1s"])
        text = tmux.wait_for(lambda s: "AccuracyLow" in s and "FIRING" in s, timeout=60)
        assert "fraud-v2" in text
        tmux.keys("q")
    finally:
        demo.terminate()
        demo.wait(30)
