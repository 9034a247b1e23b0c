"""type: command: one number, exposition text, and every way a command can fail."""

from __future__ import annotations

import sys
import time

import pytest

from mlwatch.config import CommandSourceConfig, parse_config
from mlwatch.model import is_stale_nan
from mlwatch.sources.command import CommandTarget


def target(command: list[str], extra: str = "") -> CommandTarget:
    import json

    cfg = parse_config(f"sources: [{{name: c, type: command, command: {json.dumps(command)}, timeout: 2s{extra}}}]").sources[0]
    assert isinstance(cfg, CommandSourceConfig)
    return CommandTarget(cfg)


async def test_one_number() -> None:
    t = target([sys.executable, "-c", "print(' 0.93 ')"], ", metric: acc, labels: {model: m}")
    col = await t.collect(1000)
    assert col.error is None
    assert [(s.key.name, s.key.label_dict(), s.value) for s in col.samples] == [
        ("acc", {"job": "c", "instance": t.instance, "model": "m"}, 0.93)
    ]
    assert t.instance == t.cfg.command[0].rsplit("/", 1)[-1]


async def test_exposition_text_and_staleness() -> None:
    t = target([sys.executable, "-c", "print('# TYPE x gauge'); print('x{a=\"1\"} 2'); print('y 3')"])
    col = await t.collect(1000)
    col.commit()
    assert col.error is None and {s.key.name for s in col.samples} == {"x", "y"}
    assert col.meta["x"].type.value == "gauge"
    t.cfg = t.cfg.model_copy(update={"command": [sys.executable, "-c", "import sys; sys.exit(3)"]})
    col = await t.collect(2000)
    assert col.reason == "exit_status" and "status 3" in (col.error or "")
    assert len(col.samples) == 2 and all(is_stale_nan(s.value) for s in col.samples)


@pytest.mark.parametrize(
    ("code", "reason"),
    [("import sys; sys.stdout.buffer.write(b'\\xff\\xfe')", "parse"),
     ("print('<html>nope</html>')", "parse"),
     ("import sys; print('boom', file=sys.stderr); sys.exit(1)", "exit_status")],
)  # fmt: skip
async def test_failures(code: str, reason: str) -> None:
    col = await target([sys.executable, "-c", code]).collect(0)
    assert col.reason == reason and col.error


async def test_number_format_refuses_text() -> None:
    col = await target([sys.executable, "-c", "print('a 1')"], ", format: number, metric: m").collect(0)
    assert col.reason == "parse"


async def test_missing_program() -> None:
    col = await target(["/nonexistent/program"]).collect(0)
    assert col.reason == "exec" and "/nonexistent/program" in (col.error or "")


async def test_timeout_kills_the_process_group() -> None:
    t = target([sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); time.sleep(30)"])
    t.cfg = t.cfg.model_copy(update={"timeout": 300})
    started = time.monotonic()
    col = await t.collect(0)
    assert col.reason == "timeout"
    assert time.monotonic() - started < 6


async def test_never_a_shell(tmp_path: object) -> None:
    col = await target(["echo", "1; touch /tmp/mlwatch-should-not-exist"], ", metric: m").collect(0)
    assert col.error is None or col.reason == "parse"
    import os

    assert not os.path.exists("/tmp/mlwatch-should-not-exist")
