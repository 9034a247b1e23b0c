"""The daemon's composition root: build every component from the config, run, reload, stop."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from mlwatch.config import Config, load_config
from mlwatch.errors import ConfigError, MlwatchError, StorageError
from mlwatch.ml.operators import MlOperators
from mlwatch.model import Clock, MetricType
from mlwatch.notify.service import AlertingService, query_from_engine
from mlwatch.promql.selector import parse_selector
from mlwatch.selfmetrics import OwnMetrics
from mlwatch.server.alerting_api import AlertingApi
from mlwatch.server.api import PrometheusApi
from mlwatch.server.app import AppDeps, build_app
from mlwatch.server.auth import AuthPolicy
from mlwatch.server.push import PushService
from mlwatch.sources.manager import SourceManager
from mlwatch.storage.database import DaemonLock, make_engine, sqlite_path, upgrade
from mlwatch.storage.reader import Reader
from mlwatch.storage.retention import RetentionPolicy
from mlwatch.storage.writer import FUTURE_TOLERANCE_MS, Writer

log = logging.getLogger("mlwatch.daemon")

STOP_GRACE_SECONDS = 3.0


@dataclass
class DaemonOptions:
    config_path: str | None = None  # None: the built-in default (no reload source)
    db_url: str | None = None  # --db overrides storage.url, also after a reload
    listen: str | None = None  # --listen overrides server.listen, also after a reload


class Daemon:
    """Owns every long-lived component; ``run()`` returns after a clean stop."""

    def __init__(self, config: Config, options: DaemonOptions, *, clock: Clock = time.time) -> None:
        self.config = config
        self.options = options
        self.clock = clock
        self._stop = asyncio.Event()
        self._ready = False
        self._auth = self._auth_policy(config)

    # ---------------------------------------------------------------- wiring helpers
    @property
    def db_url(self) -> str:
        return self.config.storage.url

    @staticmethod
    def _auth_policy(cfg: Config) -> AuthPolicy:
        return AuthPolicy(
            bearer_token=cfg.server.bearer_token(),
            protect_reads=cfg.server.protect_reads,
            basic_users=dict(cfg.server.basic_auth_users),
        )

    @staticmethod
    def _declared_types(cfg: Config) -> dict[str, MetricType]:
        """Metric types the config's sources declare: a push may not change them (one type per name)."""
        return {d.name: d.type for d in cfg.metric_declarations()}

    def _ssl_context(self) -> ssl.SSLContext | None:
        tls = self.config.server.tls
        if tls is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        return ctx

    # ---------------------------------------------------------------- run
    async def run(self) -> None:
        cfg = self.config
        url = self.db_url
        path = sqlite_path(url)
        engine = make_engine(url)
        lock = DaemonLock.acquire(path, cfg.server.listen) if path is not None else None
        try:
            await asyncio.to_thread(upgrade, engine)
            await self._serve(engine, path)
        finally:
            if lock is not None:
                lock.release()
            engine.dispose()

    async def _serve(self, engine: object, path: Path | None) -> None:
        cfg = self.config
        self.writer = Writer(
            engine,  # type: ignore[arg-type]
            out_of_order_window_ms=cfg.storage.out_of_order_window,
            future_tolerance_ms=FUTURE_TOLERANCE_MS,
            max_series=cfg.limits.max_series,
            clock=self.clock,
        )
        await asyncio.to_thread(self.writer.start)
        self.reader = Reader(make_engine(self.db_url, readonly=path is not None))
        self.push = PushService(
            self.writer,
            sample_interval_ms=cfg.push.sample_interval,
            accept_timestamps=cfg.push.accept_timestamps,
            default_ttl_ms=cfg.push.default_ttl,
            max_body_bytes=cfg.server.max_body_bytes,
            clock=self.clock,
            declared_type=self._declared_types(cfg).get,
        )
        self.push.restore(await asyncio.to_thread(self.reader.push_groups))
        self.own = OwnMetrics(
            writer_stats=lambda: self.writer.stats,
            queue_depth=lambda: self.writer.queue_depth,
            db_path=str(path) if path else None,
            clock=self.clock,
        )
        self.own.extra(self.push)
        self.ml = MlOperators(cfg.sources)
        self.sources = SourceManager(cfg.sources, self.writer, self.reader, clock=self.clock, operators_for=self.ml,
                                     max_buffered_samples=cfg.limits.scrape_buffer_samples)
        self.own.extra(self.sources.collector)

        self.api = PrometheusApi(
            self.reader,
            lookback_ms=lambda: self.config.limits.lookback_delta,
            query_timeout_ms=lambda: self.config.limits.query_timeout,
            query_max_samples=lambda: self.config.limits.query_max_samples,
            clock=self.clock,
            writer=self.writer,
            retention_ms=lambda: self.config.storage.retention,
        )
        self.alerting = AlertingService(
            cfg,
            query=query_from_engine(self.api.engine),
            writer=self.writer,
            clock=self.clock,
            base_dir=Path(self.options.config_path).parent if self.options.config_path else None,
            external_url=f"{'https' if cfg.server.tls else 'http'}://{cfg.server.listen}",
        )
        app = build_app(
            AppDeps(
                reader=self.reader,
                families=[self.push.families, self.sources.families],
                own=self.own,
                auth=lambda: self._auth,
                lookback_ms=lambda: self.config.limits.lookback_delta,
                reload=self.reload,
                ready=lambda: self._ready,
                max_body_bytes=cfg.server.max_body_bytes,
                routes=[self.push, self.api, self.sources, AlertingApi(self.alerting)],
            )
        )
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=STOP_GRACE_SECONDS)
        await runner.setup()
        site = web.TCPSite(runner, cfg.server.host, cfg.server.port, ssl_context=self._ssl_context(), reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            self.writer.stop()
            raise MlwatchError(f"cannot listen on {cfg.server.listen}: {exc.strerror or exc}") from None

        self.scheduler = AsyncIOScheduler()
        self._schedule()
        self.scheduler.start()
        await self.sources.start(self.scheduler)
        await self.alerting.start(self.scheduler)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self._reload_logged()))
        self._ready = True
        scheme = "https" if cfg.server.tls else "http"
        log.info("mlwatch listening on %s://%s, storing in %s", scheme, cfg.server.listen, self.db_url)
        try:
            await self._stop.wait()
        finally:
            self._ready = False
            log.info("stopping")
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.alerting.stop()
            await self.sources.stop()
            self.scheduler.shutdown(wait=False)
            await runner.cleanup()
            # Whatever was queued before the stop is committed before we exit.
            await asyncio.to_thread(self.writer.stop)
            log.info("stopped")

    def _schedule(self) -> None:
        cfg = self.config
        common = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None, "replace_existing": True}
        self.scheduler.add_job(
            self._resample, "interval", seconds=cfg.push.sample_interval / 1000, id="push-resample", **common
        )
        self.scheduler.add_job(
            self._record_own, "interval", seconds=cfg.evaluation_interval / 1000, id="self-metrics", **common
        )
        self.scheduler.add_job(self._retention, "interval", minutes=2, id="retention", **common)

    # ---------------------------------------------------------------- jobs
    async def _resample(self) -> None:
        try:
            await self.push.resample()
        except StorageError as exc:
            log.warning("push resampling failed: %s", exc)

    async def _record_own(self) -> None:
        try:
            await self.writer.write(self.own.snapshot(self.config.server.listen))
        except StorageError as exc:
            self.own.self_record_errors.inc()
            log.warning("recording own metrics failed: %s", exc)

    def _retention_policy(self) -> RetentionPolicy:
        st = self.config.storage
        return RetentionPolicy(
            retention_ms=st.retention,
            overrides=[(parse_selector(o.match), o.retention) for o in st.retention_overrides],
            max_size_bytes=st.max_size,
            downsample=[(d.after, d.step) for d in st.downsample],
        )

    async def _retention(self) -> None:
        """Rollups, retention, the size cap and incremental vacuum, in short transactions."""
        try:
            await asyncio.wrap_future(self.writer.maintain(self._retention_policy()))
        except StorageError as exc:
            log.warning("storage maintenance failed: %s", exc)

    # ---------------------------------------------------------------- control
    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        self._stop.set()

    async def reload(self) -> None:
        """Re-read the config file; a bad one raises ConfigError and the running config stays."""
        try:
            new = (await asyncio.to_thread(load_config, self.options.config_path)).with_overrides(
                listen=self.options.listen, db_url=self.options.db_url
            )
        except ConfigError:
            self.own.reload_ok.set(0)
            raise
        old = self.config
        for what, a, b in (
            ("server.listen", old.server.listen, new.server.listen),
            ("storage.url", old.storage.url, new.storage.url),
            ("server.tls", old.server.tls, new.server.tls),
            ("server.max_body_bytes", old.server.max_body_bytes, new.server.max_body_bytes),
        ):
            if a != b:
                log.warning("%s changed; restart the daemon to apply it", what)
        self.config = new
        self._auth = self._auth_policy(new)
        self.writer.out_of_order_window_ms = new.storage.out_of_order_window
        self.writer.max_series = new.limits.max_series
        self.sources.max_buffered_samples = new.limits.scrape_buffer_samples
        self.push.reconfigure(
            sample_interval_ms=new.push.sample_interval,
            accept_timestamps=new.push.accept_timestamps,
            default_ttl_ms=new.push.default_ttl,
            max_body_bytes=new.server.max_body_bytes,
            declared_type=self._declared_types(new).get,
        )
        self._schedule()
        self.alerting.reconfigure(new)
        self.ml.reconfigure(new.sources)
        await self.sources.reconfigure(new.sources)
        self.own.reload_ok.set(1)
        self.own.reload_time.set(self.clock())
        log.info("configuration reloaded from %s", self.options.config_path or "the built-in default")

    async def _reload_logged(self) -> None:
        try:
            await self.reload()
        except ConfigError as exc:
            log.error("reload rejected, keeping the running configuration:\n%s", exc)
