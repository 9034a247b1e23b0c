"""Push groups: grouping keys, normalisation, PUT/POST/DELETE, conflicts, TTL, staleness, resample."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import math

import pytest

from mlwatch.errors import ParseError, PushError, StorageUnavailable
from mlwatch.model import MetricFamily, MetricType, is_stale_nan
from mlwatch.server.exposition import render
from mlwatch.server.push import api_metrics
from mlwatch.sources.push import (
    GroupNotFound,
    PushSource,
    group_key,
    normalise,
    parse_grouping_path,
)
from mlwatch.sources.textparse import parse_text
from mlwatch.storage.reader import Reader
from mlwatch.storage.writer import SeriesLimitExceeded, Writer


def b64(s: str, pad: bool = True) -> str:
    enc = base64.urlsafe_b64encode(s.encode()).decode()
    return enc if pad else enc.rstrip("=")


# ---------------------------------------------------------------- grouping keys


@pytest.mark.parametrize(
    ("path", "labels"),
    [
        ("job/a", {"job": "a"}),
        ("job/a/instance/i1", {"instance": "i1", "job": "a"}),
        (f"job@base64/{b64('a/b', pad=False)}/path@base64/{b64('/x/y')}", {"job": "a/b", "path": "/x/y"}),
        (f"job/a/l@base64/{b64('abcd', pad=False)}", {"job": "a", "l": "abcd"}),
        ("job/a/l@base64/YWJj=", {"job": "a", "l": "abc"}),
        ("job/a/empty@base64/=", {"job": "a"}),  # empty value: absent, same group as job/a
        ("job/a/empty@base64/", {"job": "a"}),
        ("job/a/lbl/", {"job": "a"}),
        ("job/a/job/b", {"job": "a"}),  # the path's job wins
        ("job/a/b/1/b/2", {"b": "2", "job": "a"}),  # the last value of a repeated label
        ("job/a%20b/x/é", {"job": "a%20b", "x": "é"}),
    ],
)
def test_grouping_path(path: str, labels: dict[str, str]) -> None:
    assert parse_grouping_path(path) == labels


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("job/a/lbl", "odd number of components"),
        ("job/a/__x/1", "improper label name '__x'"),
        ("job/a/1x/1", "improper label name '1x'"),
        ("job/a/l@base64/!!!", "invalid base64 encoding for label l="),
        ("job/a/l@base64/YW+j", "invalid base64 encoding for label l='YW\\+j': illegal base64 data"),
        ("job/a/l@base64/Y", "invalid base64 encoding"),
        ("job/a/l@base64/_w", "not UTF-8"),  # base64 of the byte 0xFF
        ("job@base64/=", "job name is required"),
    ],
)
def test_grouping_path_errors(path: str, message: str) -> None:
    with pytest.raises(PushError, match=message.replace("(", r"\(")):
        parse_grouping_path(path)


@pytest.mark.parametrize("path", ["job/", "job", "jobs/a"])
def test_grouping_path_without_job_is_not_found(path: str) -> None:
    with pytest.raises(GroupNotFound):
        parse_grouping_path(path)


def test_empty_label_value_is_the_same_group() -> None:
    assert group_key(parse_grouping_path("job/a/x@base64/=")) == group_key(parse_grouping_path("job/a"))


# ---------------------------------------------------------------- normalisation


def norm(text: str, grouping: dict[str, str] | None = None, accept: bool = False) -> str:
    current, _ = normalise(parse_text(text), grouping or {"job": "j"}, accept_timestamps=accept)
    return render(current.values()).decode()


def test_grouping_labels_override_body_labels_and_instance_is_added() -> None:
    out = norm('x{job="other",g="2",k="1"} 1\ny{instance="zz"} 2\n', {"job": "a", "g": "1"})
    assert out == (
        '# TYPE x untyped\nx{g="1",instance="",job="a",k="1"} 1\n'
        '# TYPE y untyped\ny{g="1",instance="zz",job="a"} 2\n'
    )


def test_histogram_as_pushgateway_holds_it() -> None:
    text = (
        "# TYPE h histogram\n"
        'h_bucket{le="1.0"} 1.7\nh_bucket{le="0.5"} 1\nh_sum{le="9"} 3\nh_count 2.5\n'
        'h_bucket{a="b",le="1e3"} 4\n'
    )
    assert norm(text) == (
        "# TYPE h histogram\n"
        'h_bucket{instance="",job="j",le="1"} 1\n'
        'h_bucket{instance="",job="j",le="0.5"} 1\n'
        'h_bucket{instance="",job="j",le="+Inf"} 2\n'
        'h_sum{instance="",job="j"} 3\n'
        'h_count{instance="",job="j"} 2\n'
        'h_bucket{a="b",instance="",job="j",le="1000"} 4\n'
        'h_bucket{a="b",instance="",job="j",le="+Inf"} 0\n'
        'h_sum{a="b",instance="",job="j"} 0\n'
        'h_count{a="b",instance="",job="j"} 0\n'
    )


def test_summary_defaults_and_samples_without_quantile() -> None:
    text = '# TYPE s summary\ns 1\ns{quantile="0.9"} 1\ns{quantile="0.1"} 2\n'
    assert norm(text) == (
        "# TYPE s summary\n"
        's{instance="",job="j",quantile="0.9"} 1\n'
        's{instance="",job="j",quantile="0.1"} 2\n'
        's_sum{instance="",job="j"} 0\n'
        's_count{instance="",job="j"} 0\n'
    )


def test_go_uint64_conversion_of_counts() -> None:
    out = norm('# TYPE h histogram\nh_bucket{le="1"} -1\nh_bucket{le="2"} NaN\nh_count +Inf\n')
    assert 'le="1"} 1.8446744073709552e+19' in out
    assert 'le="2"} 9.223372036854776e+18' in out
    assert 'h_count{instance="",job="j"} 9.223372036854776e+18' in out


def test_reserved_and_empty_families_are_dropped() -> None:
    assert norm("push_time_seconds 5\npush_failure_time_seconds 1\n# TYPE e gauge\n# HELP f x\n") == ""


def test_duplicate_series_in_one_push() -> None:
    with pytest.raises(PushError, match="collected before with the same name and label values"):
        norm("x 1\nx 2\n")


def test_invalid_label_names_from_the_body() -> None:
    with pytest.raises(PushError, match="invalid name: __a"):
        norm('x{__a="y"} 1\n')


def test_timestamps_refused_unless_accepted() -> None:
    with pytest.raises(PushError, match="must not have timestamps"):
        norm("x 1 1234\n")
    current, backfill = normalise(parse_text("x 1 1234\ny 2\n"), {"job": "j"}, accept_timestamps=True)
    assert list(current) == ["y"]
    assert [(s.name, s.labels, s.value, s.timestamp_ms) for _, s in backfill] == [("x", {"job": "j"}, 1.0, 1234)]


def test_protobuf_families_pushgateway_would_store_broken() -> None:
    from mlwatch.sources.protoparse import encode_delimited, messages, parse_protobuf

    def pb(name: str, label: str = "k") -> list[MetricFamily]:
        fam = messages["MetricFamily"](name=name, type=1)
        m = fam.metric.add()
        m.label.add(name=label, value="v")
        m.gauge.value = 1
        return parse_protobuf(encode_delimited([fam]))

    for name in ("", "1x", "a-b"):
        with pytest.raises(PushError, match="is invalid"):
            normalise(pb(name), {"job": "j"}, accept_timestamps=False)
    with pytest.raises(PushError, match="invalid name: __x"):
        normalise(pb("ok", "__x"), {"job": "j"}, accept_timestamps=False)


def test_nan_payloads_are_canonical() -> None:
    current, _ = normalise(parse_text("x NaN\n"), {"job": "j"}, accept_timestamps=False)
    v = current["x"].samples[0].value
    assert math.isnan(v) and not is_stale_nan(v)


# ---------------------------------------------------------------- groups over a real writer


@pytest.fixture
def source(writer: Writer, clock: object) -> PushSource:
    return PushSource(writer, accept_timestamps=True, clock=clock)  # type: ignore[arg-type]


def ms(t: float) -> int:
    return int(t * 1000)


async def test_put_stores_samples_and_group_state(source: PushSource, reader: Reader, stored, clock) -> None:
    await source.push({"job": "a"}, parse_text('# HELP x ex\n# TYPE x gauge\nx{k="1"} 1\n'), replace=True)
    t0 = ms(clock.now)
    assert stored("x", job="a", k="1") == [(t0, 1.0)]
    assert stored("push_time_seconds", job="a") == [(t0, clock.now)]
    assert stored("push_failure_time_seconds", job="a") == [(t0, 0.0)]
    (rec,) = reader.push_groups()
    assert rec.group_key == group_key({"job": "a"}) and rec.push_time == clock.now and rec.expires_at is None
    meta = reader.metadata()
    assert meta["x"].type is MetricType.GAUGE and meta["x"].help == "ex"
    assert meta["push_time_seconds"].type is MetricType.GAUGE


async def test_put_replaces_group_and_marks_removed_series_stale(source: PushSource, stored, clock) -> None:
    await source.push({"job": "a"}, parse_text('x{k="1"} 1\nx{k="2"} 2\ny 3\n'), replace=True)
    clock.advance(10)
    await source.push({"job": "a"}, parse_text('x{k="1"} 5\n'), replace=True)
    t1 = ms(clock.now)
    assert stored("x", job="a", k="1")[-1] == (t1, 5.0)
    for series in (stored("x", job="a", k="2"), stored("y", job="a")):
        assert series[-1][0] == t1 and is_stale_nan(series[-1][1])


async def test_post_replaces_only_families_pushed(source: PushSource, clock) -> None:
    await source.push({"job": "a", "instance": "i"}, parse_text('# TYPE x gauge\nx{k="1"} 1\nx{k="2"} 2\ny 3\n'),
                      replace=True)
    await source.push({"job": "a", "instance": "i"}, parse_text('x{k="3"} 5\nz 1\n# TYPE y counter\n'),
                      replace=False)
    assert render(source.families()).decode().replace(f"{clock.now!r}", "T").splitlines() == [
        "# HELP push_failure_time_seconds Last Unix time when changing this group in the Pushgateway failed.",
        "# TYPE push_failure_time_seconds gauge",
        'push_failure_time_seconds{instance="i",job="a"} 0',
        "# HELP push_time_seconds Last Unix time when changing this group in the Pushgateway succeeded.",
        "# TYPE push_time_seconds gauge",
        'push_time_seconds{instance="i",job="a"} 1.7e+09',
        "# TYPE x untyped",
        'x{instance="i",job="a",k="3"} 5',
        "# TYPE y untyped",
        'y{instance="i",job="a"} 3',
        "# TYPE z untyped",
        'z{instance="i",job="a"} 1',
    ]


async def test_delete_ends_every_series(source: PushSource, reader: Reader, stored, clock) -> None:
    await source.push({"job": "a"}, parse_text("x 1\n"), replace=True)
    clock.advance(5)
    assert await source.delete({"job": "a"}) is True
    t1 = ms(clock.now)
    for name in ("x", "push_time_seconds", "push_failure_time_seconds"):
        last = stored(name, job="a")[-1]
        assert last[0] == t1 and is_stale_nan(last[1])
    assert reader.push_groups() == []
    assert source.families() == []
    assert await source.delete({"job": "a"}) is False


async def test_type_conflict_across_groups_stores_only_failure_time(source: PushSource, reader: Reader,
                                                                    stored, clock) -> None:
    await source.push({"job": "a"}, parse_text("# TYPE x gauge\nx 1\n"), replace=True)
    clock.advance(1)
    with pytest.raises(PushError, match="already pushed as gauge"):
        await source.push({"job": "b"}, parse_text("# TYPE x counter\nx 1\n"), replace=True)
    assert stored("x", job="b") == []
    # Like Pushgateway: the failed group now exists, empty, with its failure time.
    b = source.groups[group_key({"job": "b"})]
    assert b.families == {} and b.push_time == 0.0 and b.failure_time == clock.now
    assert stored("push_failure_time_seconds", job="b") == [(ms(clock.now), clock.now)]
    assert {r.group_key for r in reader.push_groups()} == {group_key({"job": "a"}), group_key({"job": "b"})}
    # An untyped x is a conflict too; the same type is fine.
    with pytest.raises(PushError):
        await source.push({"job": "b"}, parse_text("x 1\n"), replace=True)
    await source.push({"job": "b"}, parse_text("# TYPE x gauge\nx 2\n"), replace=True)


async def test_failed_push_to_existing_group_keeps_its_metrics(source: PushSource, stored, clock) -> None:
    await source.push({"job": "a"}, parse_text("x 1\n"), replace=True)
    t0 = clock.now
    clock.advance(3)
    with pytest.raises(ParseError):
        await source.push({"job": "a"}, ParseError("bad", 1), replace=False)
    g = source.groups[group_key({"job": "a"})]
    assert list(g.families) == ["x"] and g.push_time == t0 and g.failure_time == clock.now
    assert stored("x", job="a") == [(ms(t0), 1.0), (ms(clock.now), 1.0)]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("# TYPE x histogram\nx_count 1\n", "# TYPE x_count gauge\nx_count 1\n"),
        ("# TYPE x_sum gauge\nx_sum 1\n", "# TYPE x summary\nx_sum 1\n"),
        ("# TYPE x summary\nx_count 1\n", "x_count 2\n"),
    ],
)
async def test_suffix_collisions(source: PushSource, first: str, second: str) -> None:
    await source.push({"job": "a"}, parse_text(first), replace=True)
    with pytest.raises(PushError, match="collides with previously collected"):
        await source.push({"job": "b"}, parse_text(second), replace=True)


async def test_same_series_from_two_groups_is_refused(source: PushSource) -> None:
    await source.push({"job": "a"}, parse_text('x{g="1"} 1\n'), replace=True)
    with pytest.raises(PushError, match="same name and label values"):
        await source.push({"job": "a", "g": "1"}, parse_text("x 1\n"), replace=True)


async def test_ttl_retires_group_with_staleness_markers(source: PushSource, reader: Reader, stored, clock) -> None:
    await source.push({"job": "a"}, parse_text("x 1\n"), replace=True, ttl_ms=60_000)
    await source.push({"job": "b"}, parse_text("y 1\n"), replace=True)
    clock.advance(59)
    await source.resample()
    assert len(source.groups) == 2
    clock.advance(2)
    await source.resample()
    t = ms(clock.now)
    assert list(source.groups) == [group_key({"job": "b"})]
    assert is_stale_nan(stored("x", job="a")[-1][1]) and stored("x", job="a")[-1][0] == t
    assert stored("y", job="b")[-1] == (t, 1.0)
    assert [r.group_key for r in reader.push_groups()] == [group_key({"job": "b"})]
    assert source.stats.expired_groups == 1


async def test_default_ttl_and_ttl_zero(writer: Writer, clock) -> None:
    src = PushSource(writer, default_ttl_ms=10_000, clock=clock)
    await src.push({"job": "a"}, parse_text("x 1\n"), replace=True)
    await src.push({"job": "keep"}, parse_text("y 1\n"), replace=True, ttl_ms=0)
    assert src.groups[group_key({"job": "a"})].expires_at == clock.now + 10
    clock.advance(11)
    await src.resample()
    assert list(src.groups) == [group_key({"job": "keep"})]


async def test_each_push_extends_the_ttl(source: PushSource, clock) -> None:
    await source.push({"job": "a"}, parse_text("x 1\n"), replace=True, ttl_ms=10_000)
    clock.advance(8)
    await source.push({"job": "a"}, parse_text("x 2\n"), replace=False, ttl_ms=10_000)
    clock.advance(8)
    await source.resample()
    assert len(source.groups) == 1


async def test_resample_writes_current_values(source: PushSource, stored, clock) -> None:
    await source.push({"job": "a"}, parse_text("# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_sum 1\nh_count 3\n"),
                      replace=True)
    t0 = ms(clock.now)
    clock.advance(15)
    await source.resample()
    t1 = ms(clock.now)
    assert stored("h_bucket", job="a", le="+Inf") == [(t0, 3.0), (t1, 3.0)]
    assert stored("h_bucket", job="a", le="1") == [(t0, 2.0), (t1, 2.0)]
    assert stored("push_time_seconds", job="a") == [(t0, t0 / 1000), (t1, t0 / 1000)]


async def test_restore_from_storage(source: PushSource, writer: Writer, reader: Reader, clock) -> None:
    await source.push({"job": "a", "instance": "i"},
                      parse_text('# HELP s sum\n# TYPE s summary\ns{quantile="0.5"} NaN\ns_sum 2\ns_count 1\n'),
                      replace=True, ttl_ms=3_600_000)
    await source.push({"job": "b"}, parse_text("x -Inf\n"), replace=True)
    with pytest.raises(PushError):
        await source.push({"job": "c"}, parse_text("# TYPE x gauge\nx 1\n"), replace=True)
    again = PushSource(writer, clock=clock)
    again.restore(reader.push_groups())
    assert render(again.families()) == render(source.families())
    assert api_metrics(again.groups) == api_metrics(source.groups)
    # The restored index still refuses conflicts.
    with pytest.raises(PushError):
        await again.push({"job": "d"}, parse_text("# TYPE x gauge\nx 1\n"), replace=True)


async def test_an_unreadable_stored_group_is_dropped_not_fatal(
    source: PushSource, writer: Writer, reader: Reader, clock, caplog: pytest.LogCaptureFixture
) -> None:
    await source.push({"job": "a"}, parse_text("x 1\n"), replace=True)
    await source.push({"job": "b"}, parse_text("y 2\n"), replace=True)
    records = list(reader.push_groups())
    bad = dataclasses.replace(records[0], families=b"\x00not a record")
    again = PushSource(writer, clock=clock)
    again.restore([bad, *records[1:]])
    assert set(again.groups) == {r.group_key for r in records[1:]}
    assert again.stats.unreadable_groups == 1
    assert f"push group {bad.group_key}: its stored state cannot be read" in caplog.text


async def test_backfill_is_stored_at_its_time_and_not_current(source: PushSource, stored, clock) -> None:
    await source.push({"job": "a"}, parse_text("x 1 1600000000000\nx 2 1600000060000\ny 3\n"), replace=True)
    assert stored("x", job="a") == [(1600000000000, 1.0), (1600000060000, 2.0)]
    assert "x" not in source.groups[group_key({"job": "a"})].families
    clock.advance(15)
    await source.resample()
    assert len(stored("x", job="a")) == 2


async def test_timestamps_refused_when_not_accepted(writer: Writer, clock, stored) -> None:
    src = PushSource(writer, accept_timestamps=False, clock=clock)
    with pytest.raises(PushError, match="must not have timestamps"):
        await src.push({"job": "a"}, parse_text("x 1 1600000000000\n"), replace=True)
    assert stored("x", job="a") == []


async def test_storage_unavailable_changes_nothing(source: PushSource, writer: Writer, clock) -> None:
    await source.push({"job": "a"}, parse_text("# TYPE x gauge\nx 1\n"), replace=True)
    before = render(source.families())
    writer.stop()
    with pytest.raises(StorageUnavailable):
        await source.push({"job": "b"}, parse_text("# TYPE y counter\ny 1\n"), replace=True)
    with pytest.raises(StorageUnavailable):
        await source.push({"job": "a"}, parse_text("# TYPE x gauge\nx 2\n"), replace=True)
    with pytest.raises(StorageUnavailable):
        await source.delete({"job": "a"})
    assert render(source.families()) == before
    writer.start()
    # No reservation was left behind by the failed push of y as a counter.
    await source.push({"job": "c"}, parse_text("# TYPE y gauge\ny 1\n"), replace=True)


async def test_series_limit_refuses_the_whole_push(store_url: str, clock, reader: Reader) -> None:
    from mlwatch.storage.database import make_engine

    engine = make_engine(store_url)
    w = Writer(engine, max_series=4, clock=clock)
    w.start()
    try:
        src = PushSource(w, clock=clock)
        await src.push({"job": "a"}, parse_text("x 1\n"), replace=True)  # x, push_time, push_failure_time
        with pytest.raises(SeriesLimitExceeded):
            await src.push({"job": "a"}, parse_text("x 1\ny 1\nz 1\n"), replace=True)
        assert list(src.groups[group_key({"job": "a"})].families) == ["x"]
        assert src.stats.pushes[("PUT", "series_limit")] == 1
    finally:
        w.stop()
        engine.dispose()


async def test_concurrent_conflicting_pushes_one_wins(source: PushSource) -> None:
    results = await asyncio.gather(
        *(source.push({"job": f"j{i}"}, parse_text(f"# TYPE m {t}\nm 1\n"), replace=True)
          for i, t in enumerate(["gauge", "counter"] * 5)),
        return_exceptions=True,
    )
    ok = [r for r in results if not isinstance(r, Exception)]
    types = {f.type for g in source.groups.values() for f in g.families.values()}
    assert len(types) == 1 and len(ok) == 5
    assert all(isinstance(r, PushError) for r in results if isinstance(r, Exception))


async def test_concurrent_pushes_to_one_group_serialise(source: PushSource, stored) -> None:
    await asyncio.gather(*(source.push({"job": "a"}, parse_text(f"x {i}\n"), replace=False) for i in range(20)))
    assert source.groups[group_key({"job": "a"})].families["x"].samples[0].value == 19.0


async def test_wipe(source: PushSource, reader: Reader, stored, clock) -> None:
    for j in "abc":
        await source.push({"job": j}, parse_text("x 1\n"), replace=True)
    clock.advance(1)
    assert await source.wipe() == 3
    assert source.groups == {} and reader.push_groups() == []
    assert is_stale_nan(stored("x", job="b")[-1][1])


async def test_api_metrics_shape(source: PushSource, clock) -> None:
    await source.push({"job": "z"}, parse_text(
        '# TYPE h histogram\n# HELP h hh\nh_bucket{le="0.5"} 1\nh_bucket{le="1"} 2\nh_sum 1.5\nh_count 3\n'
        '# TYPE s summary\ns{quantile="0.5"} 2\ns{quantile="0.99"} 2.5\ns_sum 10\ns_count 4\n'
        "# TYPE c counter\nc -0\n"), replace=True)
    (entry,) = api_metrics(source.groups)
    assert list(entry) == ["c", "h", "labels", "last_push_successful", "push_failure_time_seconds",
                           "push_time_seconds", "s"]
    assert entry["labels"] == {"job": "z"} and entry["last_push_successful"] is True
    assert entry["c"]["metrics"] == [{"labels": {"instance": "", "job": "z"}, "value": "-0"}]
    assert entry["h"]["type"] == "HISTOGRAM" and entry["h"]["help"] == "hh"
    assert entry["h"]["metrics"] == [{"buckets": {"0.5": "1", "1": "2"}, "count": "3",
                                      "labels": {"instance": "", "job": "z"}, "sum": "1.5"}]
    assert entry["s"]["metrics"][0]["quantiles"] == {"0.5": "2", "0.99": "2.5"}
    assert "help" not in entry["c"]
    assert entry["push_time_seconds"]["metrics"][0]["value"] == "1.7e+09"
    assert entry["push_time_seconds"]["time_stamp"] == "2023-11-14T22:13:20Z"


async def test_pushes_to_one_group_share_commits(source: PushSource, writer: Writer, stored) -> None:
    before = writer.stats.commits
    await asyncio.gather(*(source.push({"job": "a"}, parse_text(f"x {i}\ny{i} 1\n"), replace=True)
                           for i in range(50)))
    assert writer.stats.commits - before < 50
    assert [round(v) for _, v in stored("x", job="a")][-1] == 49
    # Each PUT replaced the previous one: y0..y48 ended with a staleness marker, y49 is current.
    assert is_stale_nan(stored("y0", job="a")[-1][1]) and stored("y49", job="a")[-1][1] == 1.0
    assert list(source.groups[group_key({"job": "a"})].families) == ["x", "y49"]


async def test_failed_write_in_a_pipeline_keeps_later_changes(source: PushSource, writer: Writer) -> None:
    """A change that fails after another was built on it leaves the head to the later one."""
    await source.push({"job": "a"}, parse_text("x 1\n"), replace=True)
    writer.stop()
    first = asyncio.ensure_future(source.push({"job": "a"}, parse_text("x 2\n"), replace=False))
    await asyncio.sleep(0)
    writer.start()
    second = asyncio.ensure_future(source.push({"job": "a"}, parse_text("y 3\n"), replace=False))
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert isinstance(results[0], StorageUnavailable) and not isinstance(results[1], Exception)
    # The second POST was computed on top of the first and committed with it.
    fams = source.groups[group_key({"job": "a"})].families
    assert fams["x"].samples[0].value == 2.0 and fams["y"].samples[0].value == 3.0


async def test_help_of_a_family_shared_by_groups(source: PushSource) -> None:
    await source.push({"job": "a"}, parse_text("x 1\n"), replace=True)
    await source.push({"job": "b"}, parse_text("# HELP x second\nx 2\n"), replace=True)
    await source.push({"job": "c"}, parse_text("# HELP x third\nx 3\n"), replace=True)
    (x,) = [f for f in source.families() if f.name == "x"]
    assert x.help == "second" and len(x.samples) == 3


async def test_types_declared_by_the_config(writer: Writer, clock) -> None:
    declared = {"ai_model_latency_seconds": MetricType.HISTOGRAM, "ai_model_accuracy": MetricType.GAUGE}
    src = PushSource(writer, clock=clock, declared_type=declared.get)
    with pytest.raises(PushError, match="is a gauge in mlwatch's configuration"):
        await src.push({"job": "a"}, parse_text("# TYPE ai_model_accuracy counter\nai_model_accuracy 1\n"),
                       replace=True)
    with pytest.raises(PushError, match="collides with previously collected histogram"):
        await src.push({"job": "a"}, parse_text("ai_model_latency_seconds_count 1\n"), replace=True)
    await src.push({"job": "a"}, parse_text("# TYPE ai_model_accuracy gauge\nai_model_accuracy 1\n"),
                   replace=True)


async def test_deleted_groups_leave_no_bookkeeping(source: PushSource, clock) -> None:
    for i in range(20):
        await source.push({"job": f"j{i}"}, parse_text("x 1\n"), replace=True, ttl_ms=1000)
    await source.delete({"job": "j0"})
    clock.advance(2)
    await source.resample()
    assert source.groups == {}
    assert source._head_seq == {} and source._committed_seq == {} and source._indexed == {}
    assert source._types == {} and source._series_owner == {}
