"""``exec``: run a program (an argv list, never a shell) with the notification JSON on stdin.

For automated responses, such as switching traffic to a backup model when accuracy drops. A
non-zero exit or a timeout is a failed attempt (retried like any other); the process is killed on
timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from typing import Any

import orjson

from mlwatch.config.alerting import ExecNotifierConfig
from mlwatch.errors import NotifyError


class ExecNotifier:
    def __init__(self, cfg: ExecNotifierConfig) -> None:
        self.name = cfg.name
        self.cfg = cfg

    async def send(self, payload: Mapping[str, Any]) -> None:
        argv = list(self.cfg.command)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise NotifyError(f"exec {argv[0]}: cannot start: {exc.strerror or exc}") from None
        try:
            _, err = await asyncio.wait_for(proc.communicate(orjson.dumps(payload)), self.cfg.timeout / 1000)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: children go too
            await proc.wait()
            raise NotifyError(f"exec {argv[0]}: timed out after {self.cfg.timeout / 1000:g}s") from None
        if proc.returncode != 0:
            tail = err.decode(errors="replace").strip().splitlines()[-1:] if err else []
            raise NotifyError(f"exec {argv[0]}: exited with {proc.returncode}" + (f": {tail[0]}" if tail else ""))
