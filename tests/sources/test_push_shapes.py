"""Pushes that repeat the previous push's series with new values (the common case, B2) reuse its
shape: normalised labels, series keys and checks. These tests pin down that the reuse gives exactly
what a fresh normalisation gives: values, staleness, conflicts, persistence, metadata."""

from __future__ import annotations

import asyncio
import math

import pytest

from mlwatch.errors import PushError
from mlwatch.model import MetricType, is_stale_nan
from mlwatch.server.exposition import render
from mlwatch.server.push import api_metrics
from mlwatch.sources.push import PushGroup, PushSource, group_key
from mlwatch.sources.textparse import TextParser, parse_text
from mlwatch.storage.reader import Reader
from mlwatch.storage.writer import PushGroupRecord, Writer


@pytest.fixture
def source(writer: Writer, clock: object) -> PushSource:
    return PushSource(writer, accept_timestamps=True, clock=clock)  # type: ignore[arg-type]


def ms(t: float) -> int:
    return int(t * 1000)


async def test_repeated_series_reuse_the_shape_and_store_every_value(
    source: PushSource, writer: Writer, stored, clock
) -> None:
    parser = TextParser()  # shares label dicts between bodies, as the push endpoint's parser does
    key = group_key({"job": "a"})
    times = []
    for i in range(3):
        await source.push({"job": "a"}, parser.parse(f'x{{k="1"}} {i}\nx{{k="2"}} {10 + i}\ny {20 + i}\n'),
                          replace=False)
        times.append(ms(clock.now))
        if i == 0:
            first = source.groups[key].family_keys("x")
        clock.advance(15)
    assert source.groups[key].family_keys("x") is first  # the shape of the first push served again
    assert stored("x", job="a", k="1") == [(t, float(i)) for i, t in enumerate(times)]
    assert stored("x", job="a", k="2") == [(t, 10.0 + i) for i, t in enumerate(times)]
    assert stored("y", job="a") == [(t, 20.0 + i) for i, t in enumerate(times)]
    # The same state as a fresh normalisation of the last body (a parser without a cache).
    fresh = PushSource(writer, clock=clock)
    clock.advance(-15)
    await fresh.push({"job": "a"}, parse_text('x{k="1"} 2\nx{k="2"} 12\ny 22\n'), replace=False)
    assert render(fresh.families()) == render(source.families())
    ours, theirs = api_metrics(source.groups)[0], api_metrics(fresh.groups)[0]
    assert (ours["x"], ours["y"]) == (theirs["x"], theirs["y"])  # (failure times differ: history)


async def test_changed_labels_or_type_are_normalised_anew(source: PushSource, stored, clock, reader: Reader) -> None:
    parser = TextParser()
    await source.push({"job": "a"}, parser.parse('x{k="1"} 1\nx{k="2"} 2\n'), replace=False)
    clock.advance(15)
    await source.push({"job": "a"}, parser.parse('x{k="1"} 3\n'), replace=False)  # k="2" went away
    t1 = ms(clock.now)
    assert stored("x", job="a", k="1")[-1] == (t1, 3.0)
    assert stored("x", job="a", k="2")[-1][0] == t1 and is_stale_nan(stored("x", job="a", k="2")[-1][1])
    clock.advance(15)
    await source.push({"job": "a"}, parser.parse('# TYPE x gauge\nx{k="1"} 4\n'), replace=False)
    assert reader.metadata()["x"].type is MetricType.GAUGE
    assert source.groups[group_key({"job": "a"})].families["x"].type is MetricType.GAUGE
    clock.advance(15)
    with pytest.raises(PushError, match="collected before with the same name and label values"):
        await source.push({"job": "a"}, parser.parse('# TYPE x gauge\nx{k="1"} 5\nx{k="1"} 6\n'), replace=False)


async def test_conflicts_are_still_found_after_reuse(source: PushSource) -> None:
    parser = TextParser()
    for i in range(2):
        await source.push({"job": "a"}, parser.parse(f'x{{k="1",instance="i"}} {i}\n'), replace=False)
    # The same series from another group.
    with pytest.raises(PushError, match="collected before"):
        await source.push({"job": "a", "instance": "i"}, parser.parse('x{k="1"} 1\n'), replace=False)
    # Another type for the name.
    with pytest.raises(PushError, match="already pushed as untyped"):
        await source.push({"job": "b"}, parser.parse("# TYPE x gauge\nx 1\n"), replace=False)
    # And the group that holds it may keep pushing it.
    await source.push({"job": "a"}, parser.parse('x{k="1",instance="i"} 7\n'), replace=False)


async def test_non_finite_values_persist_and_restore(source: PushSource, writer: Writer, reader: Reader,
                                                     stored, clock) -> None:
    parser = TextParser()
    await source.push({"job": "a"}, parser.parse("x 1\ny 2\n"), replace=False)
    clock.advance(15)
    await source.push({"job": "a"}, parser.parse("x NaN\ny +Inf\n"), replace=False)
    clock.advance(15)
    await source.push({"job": "b"}, parser.parse("z -Inf\n"), replace=False)
    assert stored("y", job="a")[-1][1] == math.inf and math.isnan(stored("x", job="a")[-1][1])
    again = PushSource(writer, clock=clock)
    again.restore(reader.push_groups())
    assert render(again.families()) == render(source.families())
    assert api_metrics(again.groups) == api_metrics(source.groups)
    values = {f.name: f.samples[0].value for f in again.families()}
    assert math.isnan(values["x"]) and values["y"] == math.inf and values["z"] == -math.inf


async def test_metadata_follows_changes_within_one_commit(source: PushSource, reader: Reader) -> None:
    await source.push({"job": "a"}, parse_text("# HELP x first\nx 1\n"), replace=False)
    # Several pushes in one group commit: the last HELP is the stored one.
    await asyncio.gather(*(source.push({"job": "a"}, parse_text(f"# HELP x help {i}\nx {i}\n"), replace=False)
                           for i in range(5)))
    assert reader.metadata()["x"].help == "help 4"
    await source.push({"job": "a"}, parse_text("# HELP x first\nx 1\n"), replace=False)
    assert reader.metadata()["x"].help == "first"


def test_records_of_earlier_versions_load() -> None:
    """v1 (samples as [name, labels, value], NaN as a bare token) as written before, uncompressed."""
    v1 = (b'{"v": 1, "families": [{"name": "x", "type": "gauge", "help": "h", "unit": "", '
          b'"samples": [["x", {"instance": "", "job": "a"}, NaN], ["x", {"instance": "i", "job": "a"}, 2.5]]}], '
          b'"times": {"x": 1700000000.0}}')
    group = PushGroup.from_record(PushGroupRecord("k", {"job": "a"}, v1, 1700000000.0, 0.0, None))
    (fam,) = group.families.values()
    assert fam.type is MetricType.GAUGE and fam.help == "h" and group.family_times == {"x": 1700000000.0}
    assert math.isnan(fam.samples[0].value) and fam.samples[1].value == 2.5
    assert fam.samples[1].labels == {"instance": "i", "job": "a"}


async def test_large_groups_are_stored_compressed_and_restore(source: PushSource, writer: Writer,
                                                              reader: Reader, clock) -> None:
    body = "".join(f'metric_{i}{{shard="{i % 7}"}} {i * 1.5}\n' for i in range(100)) + "odd NaN\n"
    await source.push({"job": "big"}, parse_text(body), replace=True)
    (rec,) = reader.push_groups()
    assert rec.families[:1] != b"{" and len(rec.families) < 4096  # zlib, not the ~20 kB of JSON
    again = PushSource(writer, clock=clock)
    again.restore(reader.push_groups())
    assert render(again.families()) == render(source.families())
