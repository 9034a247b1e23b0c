"""Differential test: the same pushes to a real Pushgateway 1.5 and to mlwatch, compared.

Compared after every step: the status code, the ``/metrics`` text of the pushed families
(Pushgateway's own go_*/process_*/pushgateway_* families left out, push_time_seconds and
push_failure_time_seconds values masked) and the shape of ``/api/v1/metrics``.

The sequence avoids mlwatch's documented deviations (an empty grouping label value, a malformed
body sent to a group that does not exist yet, different HELP texts for one name in two groups,
protobuf families with invalid names or an explicit le label), which have their own tests.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import web
from aiohttp.test_utils import TestServer

from mlwatch.server.exposition import render
from mlwatch.server.push import PushService
from mlwatch.sources.protoparse import PROTOBUF_CONTENT_TYPE, encode_delimited, messages
from mlwatch.storage.database import make_engine, upgrade
from mlwatch.storage.writer import Writer

pytestmark = pytest.mark.integration

PUSHGATEWAY = "/usr/bin/prometheus-pushgateway"
SEED = '# HELP ai_model_accuracy Accuracy of the AI model\nai_model_accuracy {model="my-model"} 0.93\n'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus-pushgateway") or (PUSHGATEWAY if Path(PUSHGATEWAY).exists() else None)
    if binary is None:
        pytest.skip("prometheus-pushgateway is not installed (Debian package prometheus-pushgateway)")
    port = _free_port()
    log = (tmp_path / "pushgateway.log").open("wb")
    proc = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file=", "--web.enable-admin-api"],
        stdout=log, stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"pushgateway did not start: {(tmp_path / 'pushgateway.log').read_text()}")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture
async def mlwatch(tmp_path: Path) -> AsyncIterator[str]:
    url = f"sqlite:///{tmp_path / 'diff.db'}"
    upgrade(make_engine(url))
    engine = make_engine(url)
    writer = Writer(engine)
    writer.start()
    service = PushService(writer, sample_interval_ms=15_000, accept_timestamps=False, default_ttl_ms=None,
                          max_body_bytes=10 << 20)
    app = web.Application()
    service.add_routes(app)

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=render(service.families()), content_type="text/plain")

    app.router.add_get("/metrics", metrics)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()
        writer.stop()
        engine.dispose()


_OWN = re.compile(r"^(?:# (?:HELP|TYPE) )?(?:go_|process_|pushgateway_)")
_PUSH_TIMES = re.compile(r"^(push_time_seconds|push_failure_time_seconds)(\{.*\}) \S+$")


def pushed_families(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        if _OWN.match(line):
            continue
        out.append(_PUSH_TIMES.sub(r"\1\2 <time>", line))
    return out


def api_shape(payload: dict[str, Any]) -> list[Any]:
    """/api/v1/metrics without times, groups in a stable order (Pushgateway's is random)."""
    groups = []
    for g in payload["data"]:
        shaped = {}
        for key, value in g.items():
            if isinstance(value, dict) and "time_stamp" in value:
                value = {k: v for k, v in value.items() if k != "time_stamp"}
                if key in ("push_time_seconds", "push_failure_time_seconds"):
                    value["metrics"] = [{**m, "value": "<time>"} for m in value["metrics"]]
            elif key == "last_push_successful":
                continue
            shaped[key] = value
        groups.append(shaped)
    return sorted(groups, key=lambda g: sorted(g["labels"].items()))


def b64(s: str) -> str:
    return base64.urlsafe_b64encode(s.encode()).decode()


def pb_edge_cases() -> list[bytes]:
    """Protobuf bodies at the edges: timestamps, repeated families, an explicit +Inf bucket, text."""
    mf = messages["MetricFamily"]
    with_ts = mf(name="pb_ts", type=1)
    m = with_ts.metric.add()
    m.gauge.value = 1
    m.timestamp_ms = 1_600_000_000_000
    twice = [mf(name="pb_twice", type=1), mf(name="pb_twice", type=1)]
    for i, fam in enumerate(twice):
        m = fam.metric.add()
        m.label.add(name="i", value=str(i))
        m.gauge.value = i
    inf = mf(name="pb_inf", type=4)
    m = inf.metric.add()
    m.histogram.sample_count = 2
    b = m.histogram.bucket.add()
    b.upper_bound, b.cumulative_count = float("inf"), 2
    return [encode_delimited([with_ts]), encode_delimited(twice), encode_delimited([inf]), b"x 1\n"]


def protobuf_body() -> bytes:
    mf = messages["MetricFamily"]
    g = mf(name="pb_gauge", type=1, help="A gauge from protobuf.")
    m = g.metric.add()
    m.label.add(name="k", value="v")
    m.gauge.value = 2.5
    h = mf(name="pb_hist", type=4)
    m = h.metric.add()
    m.histogram.sample_count = 5
    m.histogram.sample_sum = 1.25
    for ub, n in ((0.1, 1), (1.0, 4)):
        b = m.histogram.bucket.add()
        b.upper_bound, b.cumulative_count = ub, n
    s = mf(name="pb_summary", type=2)
    m = s.metric.add()
    m.summary.sample_count = 2
    m.summary.sample_sum = 3
    q = m.summary.quantile.add()
    q.quantile, q.value = 0.5, 1.5
    c = mf(name="pb_counter", type=0)
    c.metric.add().counter.value = 9
    return encode_delimited([g, h, s, c])


HIST = (
    "# HELP rpc_seconds RPC latency.\n# TYPE rpc_seconds histogram\n"
    'rpc_seconds_bucket{le="1.0"} 1.7\nrpc_seconds_bucket{le="0.5"} 1\nrpc_seconds_bucket{le="1e3"} 2\n'
    'rpc_seconds_sum 3.25\nrpc_seconds_count 2.5\nrpc_seconds_bucket{code="500",le="+Inf"} 4\n'
)
SUMMARY = (
    '# TYPE q summary\nq{quantile="0.99"} 1\nq{quantile="0.5"} 2\nq_sum{quantile="0.5"} 10\nq_count 4\n'
    "# TYPE only_sum summary\nonly_sum_sum 3\n"
)
VALUES = (
    "v{k=\"a\"} 1e10\nv{k=\"b\"} 1234567\nv{k=\"c\"} 0.0001\nv{k=\"d\"} -0\nv{k=\"e\"} NaN\n"
    "v{k=\"f\"} +Inf\nv{k=\"g\"} -inf\nv{k=\"h\"} 123456789012\nv{k=\"i\"} 1e-7\nv{k=\"j\"} .5\n"
    'v{k="k"} 1.7976931348623157e308\nv{k="l"} 5e-324\nv{k="m"} 00012\n'
    'esc{v="a\\\\b \\" \\n end",w="}{,="} 1\n# HELP esc Escapes \\\\ and \\n here\n'
)

# 40 distinct series with 1 to 3 labels: sorted by label count, then values.
MANY = "".join(
    "many{" + ",".join(
        ([f'a="{i}"'] if i % 2 == 0 else [f'a="{i % 7}"', f'b="{i}"']) + ([f'c="{i}"'] if i % 3 == 0 else [])
    ) + f"}} {i}\n"
    for i in range(40)
)

# (method, path, body, headers)
STEPS: list[tuple[str, str, bytes | str, dict[str, str]]] = [
    ("POST", "/metrics/job/ai-model", SEED, {}),
    ("PUT", "/metrics/job/j2/instance/i1",
     "c 1\n# TYPE cnt counter\ncnt 5\n# TYPE g gauge\ng{x=\"1\"} 1\ng{x=\"2\"} 2\n" + HIST + SUMMARY, {}),
    ("POST", "/metrics/job/j2/instance/i1", '# TYPE g gauge\ng{x="3"} 3\nnew 1\n# TYPE cnt counter\n', {}),
    ("PUT", f"/metrics/job@base64/{b64('a/b').rstrip('=')}/path@base64/{b64('/x/y')}", "slash 1\n", {}),
    ("PUT", "/metrics/job/j3", "# TYPE cnt gauge\ncnt 1\n", {}),  # type conflict with j2
    ("PUT", "/metrics/job/j3", "cnt 1\n", {}),  # untyped vs counter: conflict too
    ("POST", "/metrics/job/j2/instance/i1", "good 1\nbad{ 1\n", {}),  # malformed, existing group
    ("PUT", "/metrics/job/j2/instance/i1/extra/e", 'labelled{job="other",instance="x",extra="y",own="o"} 1\n', {}),
    ("PUT", "/metrics/job/j4", "x 1 1600000000000\n", {}),  # timestamps refused
    ("PUT", "/metrics/job/j4", "push_time_seconds 5\npush_failure_time_seconds 1\nkept 1\n", {}),
    ("PUT", "/metrics/job/pb", protobuf_body(), {"Content-Type": PROTOBUF_CONTENT_TYPE}),
    ("PUT", "/metrics/job/gz", gzip.compress(b"zipped 1\n"), {"Content-Encoding": "gzip"}),
    ("PUT", "/metrics/job/j5", "# TYPE rpc_seconds_count gauge\nrpc_seconds_count 1\n", {}),  # suffix collision
    ("PUT", "/metrics/job/j5", "dup 1\ndup 2\n", {}),  # duplicate series
    ("PUT", "/metrics/job/j5", '# TYPE ok gauge\nok{a="1"} 1\nok{a="2"} 2\n', {}),
    ("PUT", "/metrics/job/j6", VALUES, {}),
    ("PUT", "/metrics/job/j8/instance/日本", '# HELP uni Ünïcödé — “quotes” \\n\nuni{v="é",w="日本語"} 1\n', {}),
    ("PUT", "/metrics/job/j9", MANY, {}),  # enough series for Go's sort to leave insertion sort
    ("DELETE", "/metrics/job/j5", "", {}),
    ("DELETE", "/metrics/job/never", "", {}),
    ("PUT", "/metrics/job/j7", "", {}),
    ("PUT", "/metrics/job/j7/lbl", "x 1\n", {}),  # odd number of path components
    ("PUT", "/metrics/job/j7/__x/1", "x 1\n", {}),
    ("PUT", "/metrics/job/j7/l@base64/!!!", "x 1\n", {}),
    ("PUT", "/metrics/job/j7", "x 1", {}),  # no final newline
    ("PUT", "/metrics/job/j7", 'x{__name__="y"} 1\n', {}),
    ("PUT", "/metrics/job/j7", 'x{__a="y"} 1\n', {}),
    ("PUT", "/metrics/job/j7", "# TYPE x foo\nx 1\n", {}),
    ("PUT", "/metrics/job/j7", "# TYPE x\n# TYPE x gauge\nx{a=\"1\"} 1\n", {}),
    ("POST", "/metrics/job/j7", "# TYPE x gauge\n", {}),  # an empty family changes nothing
    ("PUT", "/metrics/job/", "x 1\n", {}),
    *(("PUT", "/metrics/job/pb-edge", body, {"Content-Type": PROTOBUF_CONTENT_TYPE}) for body in pb_edge_cases()),
    ("PUT", "/api/v1/admin/wipe", "", {}),
    ("PUT", "/metrics/job/after-wipe", SEED, {}),
]


async def test_same_behaviour_as_pushgateway(pushgateway: str, mlwatch: str) -> None:
    async with aiohttp.ClientSession() as session:

        async def both(method: str, path: str, body: bytes | str, headers: dict[str, str]) -> tuple[Any, Any]:
            data = body.encode() if isinstance(body, str) else body
            out = []
            for base in (pushgateway, mlwatch):
                async with session.request(method, base + path, data=data, headers=headers) as r:
                    out.append((r.status, await r.text()))
            return out[0], out[1]

        async def get(base: str, path: str) -> str:
            async with session.get(base + path) as r:
                return await r.text()

        statuses: list[int] = []
        for i, (method, path, body, headers) in enumerate(STEPS):
            theirs, ours = await both(method, path, body, headers)
            where = f"step {i}: {method} {path} {body!r:.80}"
            assert ours[0] == theirs[0], f"{where}: status {ours} vs pushgateway {theirs}"
            statuses.append(ours[0])
            assert pushed_families(await get(mlwatch, "/metrics")) == pushed_families(
                await get(pushgateway, "/metrics")
            ), where
            assert api_shape(json.loads(await get(mlwatch, "/api/v1/metrics"))) == api_shape(
                json.loads(await get(pushgateway, "/api/v1/metrics"))
            ), where
        # The sequence exercises every outcome (guards against a sequence that silently tests nothing).
        assert {200, 202, 400, 404} <= set(statuses)
        assert statuses[[path for _, path, _, _ in STEPS].index("/metrics/job/j9")] == 200
