"""kill -9 at random moments, restart, and every line is counted exactly once (offsets commit with samples)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from mlwatch.model import Matcher
from mlwatch.storage.database import make_engine, upgrade
from mlwatch.storage.reader import Reader

CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    import mlwatch.sources.logfile as lf
    lf.READ_BYTES = 2048  # many small commits, so a kill lands between and inside them
    from mlwatch.config import parse_config
    from mlwatch.storage.database import make_engine
    from mlwatch.storage.reader import Reader
    from mlwatch.storage.writer import Writer
    from mlwatch.sources.manager import SourceManager

    url, path = sys.argv[1], sys.argv[2]
    cfg = parse_config(f'''
    sources:
      - name: preds
        type: log
        path: {path}
        metrics:
          - {{name: preds_total, type: counter, labels: {{model: "{{model}}"}}}}
          - {{name: amount_total, type: counter, field: n}}
    ''')
    writer = Writer(make_engine(url))
    writer.start()

    async def main():
        m = SourceManager(cfg.sources, writer, Reader(make_engine(url)))
        await m.start(None)
        print("started", flush=True)
        while True:
            await m.run_once()
            await asyncio.sleep(0.001)

    asyncio.run(main())
    """
)


def _latest(reader: Reader, name: str) -> dict[str, float]:
    out = {}
    for info in reader.series([Matcher.make("__name__", "=", name)]):
        _, values = reader.read_range(info.id, 0, 2**62)
        out[info.key.label_dict().get("model", "")] = float(values[-1])
    return out


def test_kill_9_at_random_points_counts_every_line_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    upgrade(make_engine(url))
    log = tmp_path / "preds.jsonl"
    log.write_text("")
    rng = random.Random(4)
    written = {"a": 0, "b": 0}
    amount = 0
    kills = 0
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, url, str(log)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "started"
        deadline = time.monotonic() + rng.uniform(0.05, 0.6)
        while time.monotonic() < deadline:
            with open(log, "a") as f:
                for _ in range(rng.randint(1, 200)):
                    model = rng.choice("ab")
                    n = rng.randint(1, 9)
                    f.write(f'{{"model": "{model}", "n": {n}}}\n')
                    written[model] += 1
                    amount += n
            time.sleep(rng.uniform(0, 0.02))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        kills += 1
    # A last run that is allowed to finish reading.
    proc = subprocess.Popen([sys.executable, "-c", CHILD, url, str(log)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    reader = Reader(make_engine(url))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if _latest(reader, "preds_total") == {k: float(v) for k, v in written.items()}:
                break
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
    assert kills == 6
    assert _latest(reader, "preds_total") == {k: float(v) for k, v in written.items()}
    assert _latest(reader, "amount_total") == {"": float(amount)}
    assert _latest(reader, "mlwatch_log_lines_total") == {"": float(sum(written.values()))}
