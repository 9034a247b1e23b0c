"""Differential test: the same data in mlwatch (loaded with ``mlwatch import``) and in a real
Prometheus 2.x (``promtool tsdb create-blocks-from openmetrics``); every query, as instant and range
query, must give the same body: series, labels, values within 1e-9 relative, NaN, absence, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlwatch.commands.importer import import_command
from mlwatch.errors import QueryError
from mlwatch.promql.engine import Engine, EngineOptions
from mlwatch.promql.errors import error_type
from mlwatch.promql.jsonfmt import error_body, success_body
from mlwatch.storage.database import make_engine
from mlwatch.storage.reader import Reader
from tests.promql.difftools import base_time, compare, generate, have_prometheus, start_prometheus

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_prometheus(), reason="needs Debian's prometheus and promtool"),
]

SEL = ["req_total", 'req_total{method="get"}', "temp", 'temp{room=~"k.*|lab"}', "combo", 'combo{a!="0"}',
       "lat_seconds_bucket", "nan_g", "up", "odd", 'temp{floor!~"1|2"}']
RANGE_FUNCS = ["rate", "irate", "increase", "delta", "idelta", "avg_over_time", "min_over_time", "max_over_time",
               "sum_over_time", "count_over_time", "stddev_over_time", "stdvar_over_time", "last_over_time",
               "present_over_time", "changes", "resets", "deriv", "absent_over_time"]
AGGS = ["sum", "avg", "min", "max", "count", "group", "stddev", "stdvar"]

HAND = [
    # selectors, lookback, gaps, ends, odd labels
    "req_total", 'req_total{instance="i1"}', 'temp{room="hall",floor="3"}', 'temp{room="lab"}', "odd",
    'odd{u="é✓"}', 'odd{q="x\\"y"}', 'odd{bs="c:\\\\d"}', "nan_g", "{__name__=~\"dup_.*\"}", 'combo{a=~"[12]"}',
    'up{instance!="i0"}', "nonexistent", '{__name__="temp",room="lab"}', "lat_seconds_count",
    # offset and @
    "req_total offset 5m", "temp offset 1h", "temp offset -10m", "req_total @ {at}", "temp @ {at} offset 10m",
    "rate(req_total[5m] @ {at})", "sum(rate(req_total[5m] offset 30m))", "temp @ start()", "temp @ end()",
    "rate(req_total[5m] @ end())", "max_over_time(temp[10m:1m] @ {at})",
    # range functions
    *[f"{f}(req_total[5m])" for f in RANGE_FUNCS],
    *[f"{f}(temp[7m])" for f in RANGE_FUNCS],
    *[f"{f}(nan_g[10m])" for f in RANGE_FUNCS if f not in ("deriv",)],
    "rate(req_total[1m])", "rate(req_total[30s])", "increase(req_total[1h])", "rate(req_total[15s])",
    "quantile_over_time(0.3, temp[10m])", "quantile_over_time(0.9, req_total[5m])", "quantile_over_time(2, temp[5m])",
    "quantile_over_time(-1, temp[5m])", "predict_linear(temp[10m], 600)", "predict_linear(req_total[5m], 3600)",
    "holt_winters(temp[10m], 0.3, 0.6)", "holt_winters(temp[10m], 1, 0.6)", "absent_over_time(nonexistent[5m])",
    'absent_over_time(temp{room="lab",floor="0"}[5m])', "deriv(temp[5m])", "changes(up[30m])", "resets(req_total[1h])",
    "rate(lat_seconds_bucket[5m])", "idelta(temp[1m])",
    # subqueries
    "max_over_time(rate(req_total[5m])[30m:1m])", "avg_over_time(temp[20m:])", "rate(req_total[10m:30s])",
    "min_over_time(sum(temp)[15m:2m])", "sum_over_time(up[10m:1m] offset 5m)", "last_over_time(temp[5m:45s])",
    "count_over_time(nan_g[20m:3m])", "deriv(sum(rate(req_total[5m]))[30m:1m])",
    # aggregations
    *[f"{a}(temp)" for a in AGGS], *[f"{a} by (room) (temp)" for a in AGGS],
    *[f"{a} without (b) (combo)" for a in AGGS], "sum by (a) (combo)", "sum(nan_g)", "max(nan_g)", "min(nan_g)",
    "avg by (k) (nan_g)", "stddev by (k) (nan_g)", "stdvar(nan_g)", "sum by (__name__) (temp)", "count without () (temp)", "sum by (nonexistent) (temp)",
    "quantile(0.5, temp)", "quantile by (room) (0.9, temp)", "quantile(1.5, temp)", "quantile(-0.5, combo)",
    "topk(3, combo)", "bottomk(2, temp)", "topk by (room) (1, temp)", "bottomk(1, nan_g)", "topk(0, temp)",
    "topk(2.7, combo)", 'count_values("value", up)', 'count_values by (room) ("v", round(temp))',
    'count_values("le", lat_seconds_bucket)', "stddev by (a) (combo)", "group by (job) (req_total)",
    "avg(rate(req_total[5m]))", "sum by (instance) (rate(req_total[5m]))",
    # binary operators, matching, bool, set operators
    "temp + 1", "2 * temp", "temp / 0", "-temp", "temp % 3", "temp ^ 2", "1 - temp", "temp atan2 2",
    "req_total - req_total offset 5m", "temp > 10", "10 < temp", "temp > bool 10", "3 >= bool temp", "temp == temp",
    "temp != bool temp", "nan_g == nan_g", "nan_g > bool 0", "up == 0",
    "rate(req_total[5m]) / on(instance) group_left sum by (instance) (rate(req_total[5m]))",
    "req_total * on(instance) group_left(version) build_info", "build_info * on(instance) group_right(version) req_total",
    "up * on(instance) build_info", "up + ignoring(version) build_info", "temp + on(room) temp",
    "sum by (room) (temp) / ignoring(floor) group_left temp", "combo - on(a, b) combo",
    "up and build_info", "up and on(instance) build_info", "up or build_info", "up unless on(instance) build_info",
    "temp unless temp > 10", "temp > 5 or temp < -2", "nonexistent or temp", "req_total and on() up",
    "up == bool on(instance) build_info", "dup_a + dup_b", "dup_a + on(x) dup_b", "dup_a > dup_b",
    "req_total + on(job) up", "up * on() group_left build_info", "up + up", "sum(temp) + sum(combo)",
    "(1 + 2) * 3 - 4 / 8", "2 ^ 3 ^ 2", "1 > bool 2", "5 % 3", "-(-temp)",
    # instant functions
    "abs(temp)", "ceil(temp)", "floor(temp)", "round(temp)", "round(temp, 0.25)", "sgn(temp)", "exp(temp / 10)",
    "sqrt(combo)", "ln(combo)", "log2(combo)", "log10(combo)", "sqrt(temp)", "clamp(temp, 0, 10)",
    "clamp(temp, 10, 0)", "clamp_min(temp, 5)", "clamp_max(temp, 5)", "abs(nan_g)",
    "histogram_quantile(0.9, rate(lat_seconds_bucket[5m]))", "histogram_quantile(0.5, lat_seconds_bucket)",
    "histogram_quantile(0.99, sum by (le) (rate(lat_seconds_bucket[10m])))", "histogram_quantile(1.5, lat_seconds_bucket)",
    "histogram_quantile(0, rate(lat_seconds_bucket[5m]))",
    'label_replace(temp, "where", "$1-x", "room", "(.*)")', 'label_replace(temp, "room", "", "room", "hall")',
    'label_replace(temp, "f2", "${1}0", "floor", "([0-9])")', 'label_replace(up, "instance", "x", "job", ".*")',
    'label_join(temp, "rf", "/", "room", "floor")', 'label_join(temp, "room", "", "nonexistent")',
    "time()", "vector(1)", "vector(time())", "scalar(sum(temp))", "scalar(temp)", "timestamp(temp)",
    "timestamp(sum(temp))", "timestamp(temp offset 3m)", "absent(nonexistent)", 'absent(nonexistent{job="x",a="b"})',
    "absent(temp)", 'absent(temp{room="lab",floor="0"})', "sort(combo)", "sort_desc(temp)",
    "sin(temp)", "cos(temp)", "tan(temp)", "asin(temp / 100)", "acos(temp / 100)", "atan(temp)", "sinh(temp / 10)",
    "cosh(temp / 10)", "tanh(temp)", "asinh(temp)", "acosh(combo)", "atanh(temp / 100)", "deg(temp)", "rad(temp)",
    "pi()", "day_of_year()", "day_of_year(timestamp(temp))", "temp{room=~\"k.*\\\\d?\"}",
    "histogram_quantile(0.75, sum by (le, svc) (rate(lat_seconds_bucket[10m])))",
    "sum by (svc) (rate(lat_seconds_sum[5m])) / sum by (svc) (rate(lat_seconds_count[5m]))",
    "rate(req_total[5m] offset -30m)", "max_over_time(temp[10m:1m] offset 5m @ {at})", "temp @ {at} and temp",
    "min_over_time(rate(req_total[1m])[5m:15s])", "topk(2, rate(req_total[5m]))", "bottomk by (method) (1, req_total)",
    # float details that ceil() turns into whole units: Prometheus' summation order and compensation
    "ceil(avg by (a) (combo) * 100000)", "ceil(avg(temp) * 1000)", "ceil(avg_over_time(req_total[7m30s:45s]))",
    "ceil(sum_over_time(temp[7m30s:1m]) * 1000)", "-(ceil(deriv(temp[7m30s:45s])))", "ceil(avg(lat_seconds_bucket))",
    "increase(temp[1m:1m]) < bool temp", "sort(nan_g)", "sort_desc(sgn(nan_g))", "rate(temp[2m])",
    "day_of_week()", "day_of_month()", "days_in_month()", "hour()", "minute()", "month()", "year()",
    "hour(timestamp(temp))", "minute(vector(1700000000))", "days_in_month(vector(1709251200))",
    "sum(temp) * scalar(count(up))", "vector(1) + temp", "count(temp) - 12",
    # mistakes: the same errors
    "temp[5m] + 1", "rate(temp)", "sum(temp[5m])", "foo{", "temp + on(room) group_left temp", "up * on() build_info",
    'label_replace(temp, "1x", "a", "room", ".*")', 'label_replace(temp, "a", "a", "room", "(")',
    "holt_winters(temp[5m], 0, 0.5)", "count_values(\"1x\", temp)", "abs(dup_a) + abs(dup_b)", "-{__name__=~\"dup_.*\"}",
    "rate({__name__=~\"dup_.*\"}[5m])", "abs({__name__=~\"dup_.*\"})", "{}", "sum(1)", '"a string"', "1",
]
assert len(HAND) >= 150


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("diff")
    base = base_time()
    om = work / "data.om"
    with om.open("w") as fh:
        for line in generate(base):
            fh.write(line + "\n")
    db = work / "mlwatch.db"
    (work / "mlwatch.yaml").write_text(f"storage:\n  url: sqlite:///{db}\n  retention: 3650d\n")
    result = CliRunner().invoke(import_command, [str(om), "-c", str(work / "mlwatch.yaml"), "-q"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    prom = start_prometheus(work, om)
    engine = make_engine(f"sqlite:///{db}", readonly=True)
    try:
        yield {"base": base, "prom": prom, "engine": Engine(Reader(engine), EngineOptions()), "import": result.output}
    finally:
        prom.stop()
        engine.dispose()


def ours(eng: Engine, expr: str, params: dict[str, Any]) -> dict[str, Any]:
    try:
        if "time" in params:
            res = eng.instant(expr, round(params["time"] * 1000))
        else:
            res = eng.range(expr, int(params["start"] * 1000), int(params["end"] * 1000), int(params["step"] * 1000))
        return json.loads(success_body(res))
    except QueryError as exc:
        return json.loads(error_body(error_type(exc)[0], str(exc)))


def theirs(url: str, path: str, expr: str, params: dict[str, Any]) -> dict[str, Any]:
    r = requests.post(f"{url}/api/v1/{path}", data={"query": expr, **params}, timeout=30)
    return r.json()  # type: ignore[no-any-return]


def check(setup: dict[str, Any], expr: str) -> list[str]:
    base = setup["base"]
    expr = expr.replace("{at}", str(base + 3600))
    problems = []
    cases = [
        ("query", {"time": base + 7200}),
        ("query", {"time": base + 6007.5}),
        ("query_range", {"start": base + 3000, "end": base + 9600, "step": 60}),
        ("query_range", {"start": base + 5990, "end": base + 7000, "step": 37}),
    ]
    for path, params in cases:
        diff = compare(expr, ours(setup["engine"], expr, params), theirs(setup["prom"].url, path, expr, params))
        if diff:
            problems.append(f"{expr!r} {path} {params}: {diff}")
    return problems


def test_import_loaded_everything(setup: dict[str, Any]) -> None:
    assert "imported" in setup["import"]
    r = requests.get(f"{setup['prom'].url}/api/v1/query", params={"query": "count({__name__=~'.+'})",
                                                                  "time": setup["base"] + 7200}, timeout=10)
    assert r.json()["data"]["result"]


def test_hand_written(setup: dict[str, Any]) -> None:
    problems = []
    for expr in HAND:
        problems.extend(check(setup, expr))
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems)


# ------------------------------------------------------------------ generated queries
_dur = st.sampled_from(["1m", "2m", "5m", "7m30s", "10m", "20m"])
_mod = st.sampled_from(["", "", "", " offset 5m", " offset -3m", " @ {at}", " @ end()", " offset 1m @ start()"])
_vec_leaf = st.builds(lambda sel, mod: sel + mod, st.sampled_from(SEL), _mod)


@st.composite
def _range_call(draw: st.DrawFn) -> str:
    sel = draw(st.sampled_from(SEL))
    rng = draw(_dur)
    if draw(st.booleans()):
        rng += draw(st.sampled_from([":", ":1m", ":45s", ":2m"]))
    return f"{draw(st.sampled_from(RANGE_FUNCS))}({sel}[{rng}]{draw(_mod)})"


def _extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    agg = st.builds(lambda a, mod, e: f"{a}{mod}({e})", st.sampled_from(AGGS),
                    st.sampled_from(["", " by (room)", " without (floor)", " by (instance)", " by (a)"]), children)
    binop = st.builds(lambda l, op, r: f"({l}) {op} ({r})", children,
                      st.sampled_from(["+", "-", "*", "/", ">", "< bool", "and", "or", "unless", "== bool"]), children)
    scal = st.builds(lambda e, op, n: f"{e} {op} {n}", children, st.sampled_from(["+", "*", ">", "<", "/", "^"]),
                     st.sampled_from(["0", "1", "2.5", "-3", "10"]))
    # not timestamp(): under stddev its ~1e9 values cancel, and Prometheus sums in map order (run to run noise)
    fn = st.builds(lambda f, e: f"{f}({e})", st.sampled_from(["abs", "ceil", "sgn", "-", "sqrt", "round"]),
                   children)
    same = st.builds(lambda e, op, f: f"({e}) {op} {f}({e})", children,
                     st.sampled_from(["+", "/", "> bool", "<", "and", "or", "unless", "- on(room)", "* ignoring(floor)"]),
                     st.sampled_from(["abs", "ceil", "sgn", "", "-"]))
    # (not topk/bottomk: generated data has ties, and Prometheus breaks them in map order)
    param_agg = st.builds(lambda a, p, mod, e: f"{a}{mod}({p}, {e})", st.sampled_from(["quantile"]),
                          st.sampled_from(["1", "2", "0.5", "0.9", "3"]),
                          st.sampled_from(["", " by (room)", " without (b)", " by (instance)"]), children)
    misc = st.builds(lambda f, e: f.replace("@@", e), st.sampled_from([
        'label_replace(@@, "x", "$1", "room", "(.).*")', "clamp(@@, 0, 10)", "round(@@, 0.5)", "sort_desc(@@)",
        'count_values("v", round(@@))', "histogram_quantile(0.9, @@)", "@@ == bool 0", "absent(@@)",
        "@@ and on() vector(1)", "@@ unless on(room) temp > 15", "scalar(count(@@)) * @@", "exp(-@@)",
    ]), children)
    return st.one_of(agg, binop, scal, fn, same, param_agg, misc)


EXPRS = st.recursive(st.one_of(_vec_leaf, _range_call()), _extend, max_leaves=4)
GENERATED: list[str] = []


@settings(max_examples=250, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(expr=EXPRS)
def test_generated(setup: dict[str, Any], expr: str) -> None:
    problems = check(setup, expr)
    assert not problems, "\n".join(problems)
