"""kill -9 of a real writing process at random points: every acknowledged batch is there afterwards."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from mlwatch.model import Matcher
from mlwatch.storage.database import make_engine, upgrade
from mlwatch.storage.reader import Reader
from mlwatch.storage.writer import Writer
from tests.storage._util import integrity_ok

SERIES = 20

CHILD = textwrap.dedent(
    """
    import sys
    from mlwatch.model import Sample, SeriesKey
    from mlwatch.storage.database import make_engine
    from mlwatch.storage.retention import RetentionPolicy
    from mlwatch.storage.writer import WriteBatch, Writer

    eng = make_engine(sys.argv[1])
    start = int(sys.argv[2])
    w = Writer(eng, out_of_order_window_ms=10**12, compact_threshold=int(sys.argv[3]), carry_limit=int(sys.argv[4]))
    w.start()
    keys = [SeriesKey.of("m", {"i": str(i)}) for i in range(SERIES)]
    dup = SeriesKey.of("dup")
    k = start
    while True:
        samples = [Sample(key, k * 1000, (k * 100 + i) / 1000) for i, key in enumerate(keys)]
        samples.append(Sample(dup, (k // 2) * 1000, -float(k)))
        w.write_sync(WriteBatch(samples, state={"k": str(k).encode()}))
        print(k, flush=True)
        if k % 97 == 0:
            w.maintain(RetentionPolicy(retention_ms=10**13, downsample=[(0, 60_000)]))
        k += 1
    """
).replace("SERIES", str(SERIES))


def _run_until_killed(url: str, start: int, threshold: int, rng: random.Random) -> int:
    """Start a writer process from batch ``start``, kill -9 it at a random point; the last acked batch."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(start), str(threshold), str(rng.choice([0, 10**9]))],
        stdout=subprocess.PIPE, env=env,
    )
    assert proc.stdout is not None
    acked = start - 1
    target = start + rng.randint(30, 400)
    try:
        while acked < target:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"the writer process exited early ({proc.wait()})")
            acked = int(line)
        time.sleep(rng.random() * 0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()
        proc.stdout.close()
        proc.wait(10)
    for line in rest.split():
        acked = int(line)
    return acked


def _check(url: str, acked: int) -> None:
    engine = make_engine(url)
    try:
        integrity_ok(engine)
        w = Writer(engine)  # rebuilds the head from the log
        w.start()
        w.stop()
        r = Reader(engine)
        for i in range(SERIES):
            (info,) = r.series([Matcher.make("i", "=", str(i))])
            ts, vals = r.read_range(info.id, 0, 2**62)
            got = dict(zip(ts.tolist(), vals.tolist(), strict=True))
            for k in range(acked + 1):
                assert got.get(k * 1000) == (k * 100 + i) / 1000, (i, k)
        (dup,) = r.series([Matcher.make("__name__", "=", "dup")])
        ts, vals = r.read_range(dup.id, 0, 2**62)
        got = dict(zip(ts.tolist(), vals.tolist(), strict=True))
        for k in range(acked + 1):
            # the newer write to the same timestamp wins; batch k+1 may have committed unacknowledged
            assert got[(k // 2) * 1000] in ({-float(k), -float(k + 1)} if k % 2 == 0 else {-float(k)})
        state = r.state("k")
        assert state is not None and int(state) >= acked
        integrity_ok(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_loses_nothing_acknowledged(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    eng = make_engine(url)
    upgrade(eng)
    eng.dispose()
    start = 0
    for _ in range(2):  # crash, recover, crash again on the recovered file
        acked = _run_until_killed(url, start, rng.choice([50, 400, 3000]), rng)
        _check(url, acked)
        start = acked + 1
    assert np.isfinite(start)
