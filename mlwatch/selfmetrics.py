"""mlwatch's own metrics (``mlwatch_*``): a prometheus_client registry per daemon.

They are exposed on ``/metrics`` and recorded into the daemon's own store every interval by
converting the registry's samples directly (never by scraping ourselves over HTTP), so PromQL
and the TUI see them like any other series.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mlwatch import __version__
from mlwatch.model import Clock, MetricMeta, MetricType, Sample, SeriesKey
from mlwatch.storage.writer import WriteBatch, WriterStats

_TYPES = {
    "counter": MetricType.COUNTER,
    "gauge": MetricType.GAUGE,
    "histogram": MetricType.HISTOGRAM,
    "summary": MetricType.SUMMARY,
    "info": MetricType.GAUGE,
    "stateset": MetricType.GAUGE,
    "unknown": MetricType.UNTYPED,
}


class _StorageCollector(Collector):
    """Reads the writer's counters and the database size at collection time."""

    def __init__(self, stats: Callable[[], WriterStats], queue_depth: Callable[[], int], db_path: str | None):
        self._stats = stats
        self._depth = queue_depth
        self._db_path = db_path

    def collect(self) -> list[Metric]:
        s = self._stats()
        out: list[Metric] = []

        def counter(name: str, doc: str, value: float) -> None:
            out.append(CounterMetricFamily(name, doc, value=value))

        counter("mlwatch_storage_samples_appended", "Samples committed to storage.", s.samples)
        counter("mlwatch_storage_out_of_order_samples", "Samples refused as older than the out-of-order window.", s.out_of_order)
        counter("mlwatch_storage_future_samples", "Samples refused as more than 10m ahead of the clock.", s.future)
        counter("mlwatch_storage_commits", "Write transactions committed (group commits).", s.commits)
        counter("mlwatch_storage_write_batches", "Write batches committed.", s.batches)
        counter("mlwatch_storage_write_failures", "Write transactions that failed.", s.failures)
        counter("mlwatch_storage_compactions", "Compaction cycles completed (log into compressed chunks).", s.compactions)
        counter("mlwatch_storage_compacted_samples", "Samples written into compressed chunks.", s.compacted_samples)
        counter("mlwatch_storage_compaction_seconds", "Writer-thread time spent compacting.", s.compaction_seconds)
        counter("mlwatch_storage_compaction_failures", "Compaction steps that failed (retried later).",
                s.compaction_failures)
        out.append(GaugeMetricFamily("mlwatch_storage_head_samples", "Samples in the log, not yet in chunks.",
                                     value=s.head_samples))
        out.append(GaugeMetricFamily("mlwatch_storage_series", "Series known to storage.", value=s.series))
        out.append(GaugeMetricFamily("mlwatch_storage_write_queue_depth", "Write batches waiting for the writer.", value=self._depth()))
        out.append(GaugeMetricFamily(
            "mlwatch_storage_last_commit_duration_seconds", "Duration of the last write transaction.", value=s.last_commit_seconds
        ))
        status = s.status
        out.append(GaugeMetricFamily(
            "mlwatch_storage_writable", "1 while the database takes writes; 0 since a write failed as locked, read-only "
            "or full (pushes get 503, log sources pause, scrapes wait in memory) until one commits again.",
            value=1.0 if status.writable else 0.0,
        ))
        out.append(GaugeMetricFamily(
            "mlwatch_storage_unwritable_seconds", "How long the database has been unwritable (0 while writable).",
            value=status.outage_seconds(),
        ))
        unavailable = CounterMetricFamily(
            "mlwatch_storage_unavailable", "Write transactions that failed because storage was unavailable, by reason "
            "(locked, readonly, full, io, cannot_open).", labels=["reason"],
        )
        for reason, n in sorted(dict(status.unavailable).items()):
            unavailable.add_metric([reason], n)
        out.append(unavailable)
        if self._db_path:
            size = 0
            for suffix in ("", "-wal"):
                try:
                    size += os.path.getsize(self._db_path + suffix)
                except OSError:
                    pass
            out.append(GaugeMetricFamily("mlwatch_storage_db_size_bytes", "Size of the database file and its WAL.", value=size))
        return out


class OwnMetrics:
    """The daemon's own instrumentation. Build one per daemon (and per test)."""

    def __init__(
        self,
        *,
        writer_stats: Callable[[], WriterStats],
        queue_depth: Callable[[], int],
        db_path: str | None,
        clock: Clock = time.time,
    ) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # Pushgateway-like output: no _created
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        Info("mlwatch_build", "mlwatch version.", registry=r).info({"version": __version__})
        self.start_time = Gauge("mlwatch_start_time_seconds", "Unix time the daemon started.", registry=r)
        self.start_time.set(clock())
        self.http_requests = Counter(
            "mlwatch_http_requests", "HTTP requests served.", ["handler", "code"], registry=r
        )
        self.http_duration = Histogram(
            "mlwatch_http_request_duration_seconds", "HTTP request latency.", ["handler"], registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.reload_ok = Gauge(
            "mlwatch_config_last_reload_successful", "Whether the last configuration reload succeeded.", registry=r
        )
        self.reload_time = Gauge(
            "mlwatch_config_last_reload_success_timestamp_seconds", "Unix time of the last successful reload.", registry=r
        )
        self.reload_ok.set(1)
        self.reload_time.set(clock())
        self.self_record_errors = Counter(
            "mlwatch_self_record_errors", "Failures to record mlwatch's own metrics into storage.", registry=r
        )
        r.register(_StorageCollector(writer_stats, queue_depth, db_path))
        ProcessCollector(namespace="mlwatch", registry=r)

    def observe_request(self, handler: str, code: int, seconds: float) -> None:
        self.http_requests.labels(handler, str(code)).inc()
        self.http_duration.labels(handler).observe(seconds)

    def extra(self, collector: Collector) -> None:
        """Register another component's collector (push service, sources ...)."""
        self.registry.register(collector)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def snapshot(self, instance: str) -> WriteBatch:
        """Every own sample as a write batch at the current time, labelled job="mlwatch"."""
        ts = int(self.clock() * 1000)
        batch = WriteBatch()
        base = {"job": "mlwatch", "instance": instance}
        for fam in self.registry.collect():
            batch.meta[fam.name] = MetricMeta(_TYPES.get(fam.type, MetricType.UNTYPED), fam.documentation, fam.unit)
            for s in fam.samples:
                if s.name.endswith("_created"):
                    continue
                # As a Prometheus scrape without honor_labels does: a sample's own job/instance
                # (e.g. mlwatch_source_*{job="<source>"}) is kept as exported_job/exported_instance.
                labels = {(f"exported_{k}" if k in base else k): v for k, v in s.labels.items()}
                batch.samples.append(Sample(SeriesKey.of(s.name, {**labels, **base}), ts, float(s.value)))
        return batch
