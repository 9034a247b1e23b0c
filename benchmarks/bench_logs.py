"""B3: log lines/s on a 2-million-line JSONL prediction log, against Debian's mtail (-one_shot).

The ratio is the median of per-run ratios (each run times ours and mtail back to back).

Both count predictions by model and put the latency into a histogram; ours also keeps the
classification window of BENCHMARKS.md B3 (binary, ``positive: 1``, with ``score``, 5m window by
model: accuracy, precision, recall, F1, log-loss, ROC AUC and the tp/fp/tn/fn counters), as the daemon
wires it (``MlOperators``). mtail's program stays counter + histogram: it has no classification, so
ours does strictly more work per line. Ours is the whole log-source pipeline in process: tail the file
in committed chunks, parse each line (orjson), derive the metrics and the window, and commit samples +
offsets + state to a real SQLite store. mtail runs as a process over the same file with an equivalent
program; its wall time includes its start-up (about 0.05 s). Each side's totals are checked (every line
counted, per model; ours also every outcome, tp/fp/tn/fn per model) before a speed is reported.

    /work/venv/bin/python benchmarks/bench_logs.py [--runs 5] [--lines 2000000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PEERS, emit, ensure_debian_package, row

PROGRAM = r"""
counter ai_model_predictions_total by model
histogram ai_model_latency_seconds buckets 0.01, 0.05, 0.1, 0.5, 1

/"model": *"(?P<model>[^"]+)".*"latency_ms": *(?P<lat>[0-9.]+)/ {
  ai_model_predictions_total[$model]++
  ai_model_latency_seconds = float($lat) / 1000.0
}
"""


def make_log(path: Path, lines: int, outcomes: dict[tuple[str, str], int] | None = None) -> dict[str, int]:
    """Write the log; return the lines per model, and count each model's outcomes into ``outcomes``."""
    rng = random.Random(7)
    models = ["fraud-v1", "fraud-v2", "churn", "ranker"]
    per_model = dict.fromkeys(models, 0)
    outcomes = {} if outcomes is None else outcomes
    t0 = 1_767_225_600.0
    with open(path, "w") as f:
        buf = []
        for i in range(lines):
            model = models[i % 4]
            per_model[model] += 1
            lat = round(rng.expovariate(1 / 40), 3)
            pred = rng.random() < 0.3
            label = pred ^ (rng.random() < 0.1)
            kind = ("t" if pred == label else "f") + ("p" if pred else "n")
            outcomes[(model, kind)] = outcomes.get((model, kind), 0) + 1
            buf.append(
                f'{{"ts": {t0 + i * 0.001:.3f}, "request_id": "r{i}", "model": "{model}", "latency_ms": {lat}, '
                f'"pred": {int(pred)}, "label": {int(label)}, "score": {rng.random():.4f}}}\n'
            )
            if len(buf) >= 10000:
                f.writelines(buf)
                buf.clear()
        f.writelines(buf)
    return per_model


def ensure_mtail() -> str:
    return ensure_debian_package("mtail", PEERS["mtail"])


def run_mtail(mtail: str, log: Path, progs: Path) -> tuple[float, dict[str, float]]:
    started = time.perf_counter()
    out = subprocess.run(
        [mtail, "-one_shot", "-one_shot_format", "json", "-progs", str(progs), "-logs", str(log), "-logtostderr"],
        capture_output=True, text=True, timeout=3600, check=True,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    counts: dict[str, float] = {}
    for metric in json.loads(out.stdout).get("ai_model_predictions_total", []):
        for lv in metric.get("LabelValues", []):
            counts[lv["Labels"][0]] = float(lv["Value"]["Value"])
    return elapsed, counts


def run_ours(log: Path, work: Path) -> tuple[float, dict[str, float], int, dict[tuple[str, str], float]]:
    from mlwatch.config import parse_config
    from mlwatch.ml.operators import MlOperators
    from mlwatch.sources.manager import SourceManager
    from mlwatch.storage.database import make_engine, upgrade
    from mlwatch.storage.reader import Reader
    from mlwatch.storage.writer import Writer

    db = work / f"bench-{time.monotonic_ns()}.db"
    url = f"sqlite:///{db}"
    upgrade(make_engine(url))
    writer = Writer(make_engine(url))
    writer.start()
    cfg = parse_config(f"""
sources:
  - name: predictions
    type: log
    path: {log}
    metrics:
      - {{name: ai_model_predictions_total, type: counter, labels: {{model: "{{model}}"}}}}
      - {{name: ai_model_latency_seconds, type: histogram, field: latency_ms, scale: 0.001, buckets: [0.01, 0.05, 0.1, 0.5, 1]}}
    classification: {{prediction: pred, label: label, score: score, positive: 1, window: 5m, by: [model], prefix: ai_model}}
""")
    manager = SourceManager(cfg.sources, writer, Reader(make_engine(url)), operators_for=MlOperators(cfg.sources))

    async def drain() -> float:
        await manager.start(None)
        started = time.perf_counter()
        runner = next(iter(manager._runners.values()))
        source = runner.target
        while True:
            before = source.lines_total  # type: ignore[attr-defined]
            await manager.run_once()
            if source.lines_total == before:  # type: ignore[attr-defined]
                break
        elapsed = time.perf_counter() - started
        await manager.stop()
        return elapsed

    elapsed = asyncio.run(drain())
    counts: dict[str, float] = {}
    outcomes: dict[tuple[str, str], float] = {}
    from mlwatch.model import Matcher

    reader = Reader(make_engine(url))
    lines = 0
    names = "ai_model_predictions_total|mlwatch_log_lines_total|ai_model_(tp|fp|tn|fn)_total"
    for info in reader.series([Matcher.make("__name__", "=~", names)]):
        _, values = reader.read_range(info.id, 0, 2**62)
        if info.key.name == "mlwatch_log_lines_total":
            lines = int(values[-1])
        elif info.key.name == "ai_model_predictions_total":
            counts[info.key.label_dict()["model"]] = float(values[-1])
        else:
            kind = info.key.name.removeprefix("ai_model_").removesuffix("_total")
            outcomes[(info.key.label_dict()["model"], kind)] = float(values[-1])
    writer.stop()
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    return elapsed, counts, lines, outcomes


def soak(kills: int) -> int:
    """kill -9 a log-source process ``kills`` times at random moments while lines are appended; then check
    that every line was counted exactly once (the suite does this 6 times; this runs it many more)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import signal

    from mlwatch.storage.database import make_engine, upgrade
    from mlwatch.storage.reader import Reader
    from tests.sources.test_logfile_crash import CHILD, _latest

    rng = random.Random(11)
    with tempfile.TemporaryDirectory(prefix="mlwatch-soak-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'soak.db'}"
        upgrade(make_engine(url))
        log = Path(tmp) / "preds.jsonl"
        log.write_text("")
        written = {"a": 0, "b": 0}
        for k in range(kills + 1):
            proc = subprocess.Popen([sys.executable, "-c", CHILD, url, str(log)], stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            proc.stdout.readline()
            deadline = time.monotonic() + (rng.uniform(0.02, 0.8) if k < kills else 0.1)
            while time.monotonic() < deadline:
                with open(log, "a") as f:
                    for _ in range(rng.randint(1, 300)):
                        model = rng.choice("ab")
                        f.write(f'{{"model": "{model}", "n": 1}}\n')
                        written[model] += 1
                time.sleep(rng.uniform(0, 0.01))
            if k < kills:
                os.kill(proc.pid, signal.SIGKILL)
            else:  # the last run may finish
                reader = Reader(make_engine(url))
                end = time.monotonic() + 120
                while time.monotonic() < end and _latest(reader, "preds_total") != {m: float(n) for m, n in written.items()}:
                    time.sleep(0.2)
                proc.kill()
            proc.wait(10)
            proc.stdout.close()
        got = _latest(Reader(make_engine(url)), "preds_total")
    ok = got == {m: float(n) for m, n in written.items()}
    print(f"soak: {kills} kill -9, {sum(written.values())} lines written, counted {got}: {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--soak", type=int, metavar="KILLS", help="instead: kill -9 soak with this many kills")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--lines", type=int, help="lines in the log (default 2,000,000; --quick 200,000)")
    p.add_argument("--quick", action="store_true", help="200k lines, 3 runs")
    p.add_argument("--json", type=Path, help="append the rows as JSON lines to this file")
    args = p.parse_args()
    if args.soak:
        return soak(args.soak)
    args.lines = args.lines or (200_000 if args.quick else 2_000_000)
    if args.quick and "--runs" not in sys.argv:
        args.runs = 3
    mtail = ensure_mtail()
    with tempfile.TemporaryDirectory(prefix="mlwatch-bench-logs-") as tmp:
        work = Path(tmp)
        log = work / "predictions.jsonl"
        want_outcomes: dict[tuple[str, str], int] = {}
        expected = {k: float(v) for k, v in make_log(log, args.lines, want_outcomes).items()}
        expected_outcomes = {k: float(v) for k, v in want_outcomes.items()}
        progs = work / "progs"
        progs.mkdir()
        (progs / "predictions.mtail").write_text(PROGRAM)
        ours: list[float] = []
        peer: list[float] = []
        ratios: list[float] = []  # per run, ours and mtail back to back: robust to a machine whose load varies
        # one warm-up each, then the measured runs, interleaved
        for i in range(args.runs + 1):
            t, counts, lines, outcomes = run_ours(log, work)
            if counts != expected or lines != args.lines or outcomes != expected_outcomes:
                print(f"ours: wrong result {counts} lines={lines} outcomes={outcomes}, expected {expected} "
                      f"{expected_outcomes}", file=sys.stderr)  # fmt: skip
                return 1
            if i:
                ours.append(args.lines / t)
            if mtail:
                t, counts = run_mtail(mtail, log, progs)
                if counts != expected:
                    print(f"mtail: wrong result {counts}, expected {expected}", file=sys.stderr)
                    return 1
                if i:
                    peer.append(args.lines / t)
                    ratios.append(ours[-1] / peer[-1])
    ok = statistics.median(ratios) >= 3 if ratios else None
    emit([row(f"B3 log lines/s, {args.lines:,}-line JSONL + classification", ours, peer or None, unit="lines/s",
              peer_name="mtail -one_shot (counter + histogram only)", ratios=ratios, target=">= 3x", ok=ok,
              note="every line, model and outcome counted on both sides")], args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
