"""Hostile requests to a real daemon: push bodies and paths, PromQL text and parameters, huge and bomb bodies.
Always an answer below 500 (a 503 only for a query timeout), a bounded memory footprint, and a daemon that
lives on and keeps a valid /metrics."""

from __future__ import annotations

import base64
import gzip
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mlwatch.errors import ParseError
from mlwatch.sources.protoparse import PROTOBUF_CONTENT_TYPE, encode_delimited, messages
from mlwatch.sources.textparse import parse_text
from tests.helpers import DaemonProcess, start_daemon

HTTP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    d = start_daemon(tmp_path_factory.mktemp("fuzzhttp"), "  max_body_bytes: 4MiB\nlimits: {query_timeout: 5s}\n")
    requests.post(f"{d.url}/metrics/job/seed", data=b'seed{a="1"} 1\nseed{a="2"} 2\n', timeout=10).raise_for_status()
    yield d
    assert d.stop() == 0


def rss_peak_kib(d: DaemonProcess) -> int:
    for line in Path(f"/proc/{d.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def assert_metrics_valid(d: DaemonProcess) -> None:
    """Whatever a push got accepted, /metrics stays a body every Prometheus can scrape."""
    body = requests.get(f"{d.url}/metrics", timeout=10).text
    try:
        parse_text(body)
    except ParseError as exc:
        raise AssertionError(f"/metrics no longer parses: {exc}") from None


# ---------------------------------------------------------------- push bodies and paths

LINES = [
    "m 1", 'm{a="x"} 2', "m NaN", "m +Inf", "m 1 1700000000000", "# TYPE m counter", "# TYPE m gauge",
    "# HELP m x\\ny", "m_bucket{le=\"1\"} 1", "# TYPE h histogram", 'h_bucket{le="+Inf"} 1', "h_sum 1", "h_count 1",
    'm{job="other"} 3', 'm{instance="i"} 4', 'm{__name__="x"} 1', 'm{a="\\u00e9\\\\"} 1', "{} 1", "m{", "m 1 2 3",
    "x" * 300 + " 1", "m " + "9" * 40, "push_time_seconds 1", "m 1 -99999999999999",
]  # fmt: skip
text_bodies = st.lists(st.sampled_from(LINES) | st.text(max_size=20), max_size=8).map(lambda ls: "\n".join(ls) + "\n")


@st.composite
def proto_bodies(draw: st.DrawFn) -> bytes:
    mf = messages["MetricFamily"](name=draw(st.sampled_from(["m", "pm", "m\n", "", "9x", "a:b"])),
                                  type=draw(st.integers(0, 4)))
    for _ in range(draw(st.integers(0, 2))):
        m = mf.metric.add()
        for _ in range(draw(st.integers(0, 2))):
            lp = m.label.add()
            lp.name = draw(st.sampled_from(["a", "job", "le", "__x", "b\n", ""]))
            lp.value = draw(st.text(max_size=5))
        getattr(m, draw(st.sampled_from(["gauge", "counter", "untyped"]))).value = draw(st.floats())
    body = encode_delimited([mf])
    if draw(st.booleans()):
        body = body[: draw(st.integers(0, len(body)))]
    return body


@HTTP
@given(body=st.one_of(text_bodies.map(str.encode), proto_bodies(), st.binary(max_size=100)),
       proto=st.booleans(), gz=st.booleans(), method=st.sampled_from(["PUT", "POST"]))
@example(body=b"", proto=False, gz=True, method="PUT")
def test_push_bodies(daemon: DaemonProcess, body: bytes, proto: bool, gz: bool, method: str) -> None:
    headers = {"Content-Type": PROTOBUF_CONTENT_TYPE} if proto else {}
    if gz:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    r = requests.request(method, f"{daemon.url}/metrics/job/fuzz", data=body, headers=headers, timeout=30)
    assert r.status_code in (200, 400), (r.status_code, r.text)
    if r.status_code == 400:
        assert r.text.strip()
    else:
        assert_metrics_valid(daemon)


segment = st.one_of(
    st.sampled_from(["a", "job", "instance", "__x", "a@base64", "le", "", "=", "%2F", "%00", "%ZZ", "%C3%28", "%0A"]),
    st.text(alphabet="ab_-=.~@%/", max_size=6),
    st.binary(max_size=8).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
)


@HTTP
@given(job=segment, rest=st.lists(segment, max_size=4), b64=st.booleans())
def test_push_paths(daemon: DaemonProcess, job: str, rest: list[str], b64: bool) -> None:
    head = "job@base64" if b64 else "job"
    url = f"{daemon.url}/metrics/{head}/{job}" + "".join("/" + s for s in rest)
    r = requests.put(url, data=b"pathfuzz 1\n", timeout=30)
    assert r.status_code in (200, 400, 404, 405), (url, r.status_code, r.text)
    if r.status_code == 200:
        assert_metrics_valid(daemon)
        requests.delete(url, timeout=30)


# ---------------------------------------------------------------- PromQL through the API

QUERY_TOKENS = [
    "seed", "seed{a=\"1\"}", "{a=~\"", "(a+)+", "\"}", "[5m]", "[5m:1s]", "[0s]", "offset 1h", "offset -1y", "@ 0",
    "@ start()", "@ 1e20", "sum", "by (a)", "without (a)", "rate", "(", ")", "[", "]", "{", "}", ",", "+", "/", "^",
    " and ", " or ", " unless ", " bool ", "==", "!=", "=~", "!~", "1", "1e308", "NaN", "Inf", "-", "\"s\"",
    "topk(2, ", "quantile(0.5, ", "histogram_quantile(0.9, ", "label_replace(", "count_values(\"x\", ", "time()",
    "vector(1)", "scalar(", "absent(", "holt_winters(", "#", "\n", "\x00", "é", "__name__",
]  # fmt: skip
queries = st.one_of(st.lists(st.sampled_from(QUERY_TOKENS), max_size=25).map("".join), st.text(max_size=60))
ok_or_refused = (200, 400, 422, 503)  # 503 only with errorType timeout, as Prometheus


def check_api_answer(r: requests.Response) -> None:
    assert r.status_code in ok_or_refused, (r.status_code, r.text[:300])
    doc = r.json()
    if r.status_code != 200:
        assert doc["status"] == "error" and doc["error"].strip()
        assert r.status_code != 503 or doc["errorType"] == "timeout"


@HTTP
@given(query=queries, method=st.sampled_from(["GET", "POST"]))
def test_any_query_text(daemon: DaemonProcess, query: str, method: str) -> None:
    params = {"query": query, "time": "1700000000"}
    if method == "GET":
        r = requests.get(f"{daemon.url}/api/v1/query", params=params, timeout=60)
    else:
        r = requests.post(f"{daemon.url}/api/v1/query", data=params, timeout=60)
    check_api_answer(r)


times = st.one_of(
    st.sampled_from(["0", "-1", "1e9", "1e12", "9e15", "NaN", "Inf", "-Inf", "1e400", "", " ", "now", "0x10",
                     "2020-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2020-13-01T00:00:00Z", "1.5"]),
    st.floats(-1e13, 1e13, allow_nan=False).map(repr),
)  # fmt: skip
steps = st.sampled_from(["1", "0", "-1", "0.0001", "15s", "1e290", "1e400", "NaN", "", "1y", "99999999999999999999y"])


@HTTP
@given(start=times, end=times, step=steps, timeout=st.sampled_from(["", "1s", "0", "-1s", "NaN", "1e400"]))
def test_query_range_parameters(daemon: DaemonProcess, start: str, end: str, step: str, timeout: str) -> None:
    params = {"query": "sum(rate(seed[5m]))", "start": start, "end": end, "step": step, "timeout": timeout}
    r = requests.get(f"{daemon.url}/api/v1/query_range", params=params, timeout=60)
    check_api_answer(r)


HOSTILE_QUERIES = {
    "5000 nested parens": "(" * 5000 + "1" + ")" * 5000,  # crashed the daemon (SIGSEGV in promql-parser)
    "20000 chained operators": "+".join(["1"] * 20000),  # crashed it too, after a minute of parsing
    "4000 nested subqueries": "max_over_time(" * 4000 + "seed" + "[5m:1s])" * 4000,
    "10000 nested calls": "abs(" * 10000 + "seed" + ")" * 10000,
    "a 2 MB string": 'seed{a="' + "x" * 2_000_000 + '"}',
    "50000 matchers": "seed{" + ",".join(f'l{i}="x"' for i in range(50_000)) + "}",
    "200000 alternatives": "seed or " * 200_000 + "seed",
    "a giant regex": 'seed{a=~"' + "(a+)+" * 2000 + '"}',
    "an illegal repetition": 'seed{a=~"a{1000}{1000}"}',
    "a subquery of 10^12 steps": "max_over_time(seed[10000d:1ms])",  # tried to allocate 6 TiB
    "a subquery of 10^8 steps": "max_over_time(seed[2d:1ms])",  # allocated 1.4 GB before refusing
    "topk 1e300": "topk(1e300, seed)",
    "@ NaN": "seed @ NaN",
    "a NUL": "seed\x00",
}


@pytest.mark.parametrize("name", list(HOSTILE_QUERIES))
def test_hostile_queries_are_refused_quickly(daemon: DaemonProcess, name: str) -> None:
    started = time.monotonic()
    r = requests.post(f"{daemon.url}/api/v1/query", data={"query": HOSTILE_QUERIES[name]}, timeout=60)
    check_api_answer(r)
    assert time.monotonic() - started < 30
    assert requests.get(f"{daemon.url}/-/healthy", timeout=10).status_code == 200


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"query": "seed @ 1e300"}, id="@ 1e300: ValueError reading the timestamp"),
        pytest.param({"query": "seed", "time": "1e18"}, id="time=1e18: int64 overflow"),
        pytest.param({"query": "rate(seed[5m])", "start": "0", "end": "1e15", "step": "1e11", "range": "1"},
                     id="range to 1e15: int64 overflow"),
    ],
)
def test_out_of_range_times_are_bad_data(daemon: DaemonProcess, params: dict[str, str]) -> None:
    path = "query_range" if params.pop("range", None) else "query"
    r = requests.get(f"{daemon.url}/api/v1/{path}", params=params, timeout=60)
    assert r.status_code == 400, r.text[:300]


# ---------------------------------------------------------------- huge bodies: bounded memory


def test_a_50mb_body_is_refused_with_bounded_memory(daemon: DaemonProcess) -> None:
    before = rss_peak_kib(daemon)

    def chunks() -> Iterator[bytes]:  # streamed without a Content-Length, so only the running count can stop it
        line = b'big{a="' + b"x" * 1000 + b'"} 1\n'
        for _ in range(50 * 1024):
            yield line

    try:
        r = requests.put(f"{daemon.url}/metrics/job/big", data=chunks(), timeout=60)
        assert r.status_code == 413, r.text
    except requests.exceptions.ConnectionError:
        pass  # the daemon may answer 413 and close before the client has sent everything
    r = requests.put(f"{daemon.url}/metrics/job/big", data=b"x" * (50 << 20), timeout=60)
    assert r.status_code == 413 and "max_body_bytes" in r.text
    assert rss_peak_kib(daemon) - before < 64 * 1024, "the daemon's peak RSS grew by more than 64 MiB"
    assert 'job="big"' not in requests.get(f"{daemon.url}/metrics", timeout=10).text


def test_a_gzip_bomb_is_refused_with_bounded_memory(daemon: DaemonProcess) -> None:
    bomb = gzip.compress(b"a 1\n" * ((100 << 20) // 4))  # ~100 MiB inflated, well under 1 MiB on the wire
    before = rss_peak_kib(daemon)
    r = requests.put(f"{daemon.url}/metrics/job/bomb", data=bomb, headers={"Content-Encoding": "gzip"}, timeout=60)
    assert r.status_code == 413, r.text
    assert "larger than" in r.text
    assert rss_peak_kib(daemon) - before < 64 * 1024, "the daemon's peak RSS grew by more than 64 MiB"


def test_the_daemon_survived_and_metrics_parse(daemon: DaemonProcess) -> None:
    assert daemon.proc.poll() is None
    assert requests.get(f"{daemon.url}/-/healthy", timeout=10).status_code == 200
    assert_metrics_valid(daemon)
    r = requests.get(f"{daemon.url}/api/v1/query", params={"query": "seed"}, timeout=10)
    assert len(r.json()["data"]["result"]) == 2


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"m 1 " + b"1" * 5000 + b"\n", id="5000-digit timestamp"),
        pytest.param(b"m 1 99999999999999999999999\n", id="timestamp beyond int64"),
        pytest.param(b'm{a="' + b'\\"' * 100_000 + b"\n", id="unterminated escaped value"),
    ],
)
def test_push_bodies_with_huge_numbers_are_bad_requests(daemon: DaemonProcess, body: bytes) -> None:
    r = requests.post(f"{daemon.url}/metrics/job/huge", data=body, timeout=30)
    assert r.status_code == 400 and "line 1" in r.text, (r.status_code, r.text[:200])
