"""``type: command``: run an argv (never a shell) and read one number or exposition text from stdout.

A non-zero exit, a timeout (the whole process group is killed), output that is neither a number
nor valid exposition text, or a command that cannot be started: each is an error of this source
(``up`` 0, staleness markers for its series), never of the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import PurePath

from mlwatch.config import CommandSourceConfig
from mlwatch.errors import ParseError
from mlwatch.model import MetricMeta, MetricType, Sample, SeriesKey
from mlwatch.sources.base import Collection, SeriesTracker
from mlwatch.sources.http import target_labels
from mlwatch.sources.textparse import TextParser

__all__ = ["CommandTarget"]

MAX_OUTPUT_BYTES = 16 * 1024 * 1024


class CommandTarget:
    def __init__(self, cfg: CommandSourceConfig) -> None:
        self.cfg = cfg
        self.job = cfg.name
        self.instance = PurePath(cfg.command[0]).name
        self.scrape_url = "exec:" + " ".join(cfg.command)
        self.labels = target_labels(cfg.name, self.instance, cfg.labels)
        self.interval_ms = cfg.interval
        self.timeout_ms = cfg.timeout
        self._tracker = SeriesTracker()
        self._parser = TextParser()

    def removed(self, now_ms: int) -> list[Sample]:
        return self._tracker.all_stale(now_ms)

    async def close(self) -> None:
        return None

    def _failed(self, now_ms: int, reason: str, message: str) -> Collection:
        return Collection(samples=self._tracker.stale_for(set(), now_ms), error=message, reason=reason,
                          commit=self._tracker.accept)  # fmt: skip

    async def _run(self) -> tuple[int, bytes, bytes]:
        proc = await asyncio.create_subprocess_exec(
            *self.cfg.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group, so a timeout kills its children too
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.cfg.timeout / 1000)
        except (TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
            raise
        return proc.returncode or 0, out, err

    async def collect(self, now_ms: int) -> Collection:
        try:
            code, out, err = await self._run()
        except TimeoutError:
            return self._failed(now_ms, "timeout", f"command timed out after {self.cfg.timeout / 1000:g}s and was killed")
        except OSError as exc:
            return self._failed(now_ms, "exec", f"cannot run {self.cfg.command[0]!r}: {exc.strerror or exc}")
        if code != 0:
            tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            return self._failed(now_ms, "exit_status", f"command exited with status {code}: {tail[0][:300]}".rstrip(": "))
        if len(out) > MAX_OUTPUT_BYTES:
            return self._failed(now_ms, "output_size", f"output larger than {MAX_OUTPUT_BYTES} bytes")
        try:
            text = out.decode("utf-8")
        except UnicodeDecodeError:
            return self._failed(now_ms, "parse", "output is not valid UTF-8")
        samples: list[Sample] = []
        meta: dict[str, MetricMeta] = {}
        fmt = self.cfg.format
        number = _one_number(text) if fmt != "text" else None
        if number is not None and self.cfg.metric is not None:
            key = SeriesKey.of(self.cfg.metric, self.labels)
            samples.append(Sample(key, now_ms, number))
            meta[self.cfg.metric] = MetricMeta(MetricType(self.cfg.metric_type))
        elif fmt == "number":
            return self._failed(now_ms, "parse", f"expected one number on stdout, got {text.strip()[:100]!r}")
        else:
            body = text if text.endswith("\n") or not text else text + "\n"
            try:
                families = self._parser.parse(body)
            except ParseError as exc:
                return self._failed(now_ms, "parse", f"output is neither one number nor exposition text: {exc}")
            for fam in families:
                meta[fam.name] = MetricMeta(fam.type, fam.help or "", fam.unit)
                for s in fam.samples:
                    labels = {**s.labels, **self.labels}
                    samples.append(Sample(SeriesKey.of(s.name, labels), s.timestamp_ms or now_ms, s.value))
        seen = {s.key for s in samples}
        kept = len(samples)
        samples += self._tracker.stale_for(seen, now_ms)
        return Collection(samples=samples, meta=meta, scraped=kept, kept=kept, commit=self._tracker.accept)


def _one_number(text: str) -> float | None:
    stripped = text.strip()
    if not stripped or "\n" in stripped or " " in stripped:
        return None
    try:
        return float(stripped)
    except ValueError:
        return None
