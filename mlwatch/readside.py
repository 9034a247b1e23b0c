"""The read side's composition root: what the TUI (and read-only CLI commands) read through.

:func:`open_readside` builds, from a config (or ``--db``), a read-only storage :class:`Reader`, a
PromQL :class:`Engine` over it, a read-only connection for the alert store and, when a daemon holds
the database, a :class:`DaemonClient` for its HTTP API (the only change the TUI makes, a silence,
goes through it). Screens see all of it through one Protocol, :class:`TuiData`, so tests hand them
a fixed seeded database and a fixed clock. Works while the daemon writes, without it, and on a
backup copy (``mlwatch db backup``), since nothing here writes unless asked to add a silence.
"""

from __future__ import annotations

import json
import re
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from mlwatch.errors import MlwatchError

ROLLUP_STEP_MS = 300_000  # without a config: the rollup level long ranges are drawn from
ROLLUP_AFTER_MS = 2 * 86_400_000  # and the range from which they are tried


# ------------------------------------------------------------------ what screens receive


@dataclass(frozen=True, slots=True)
class ChartSeries:
    """One line of a chart, already reduced to at most one point per screen column.

    Where a column holds many samples, ``lo``/``hi`` are their min and max (drawn as a band's two
    edges, so spikes survive the reduction); elsewhere ``lo`` and ``hi`` are the same values.
    ``stats`` are min/avg/max/last over the whole range, computed before any reduction.
    """

    name: str
    ts: npt.NDArray[np.float64]  # seconds
    lo: npt.NDArray[np.float64]
    hi: npt.NDArray[np.float64]
    stats: tuple[float, float, float, float]
    from_rollup: bool = False
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Threshold:
    alertname: str
    op: str
    value: float


@dataclass(frozen=True, slots=True)
class SeriesRow:
    """A stored series for the overview and the explorer's list: latest value and a short history."""

    name: str
    labels: dict[str, str]
    value: float | None
    history: tuple[float, ...]

    @property
    def selector(self) -> str:
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(self.labels.items()))
        return f"{self.name}{{{inner}}}" if inner else self.name


@dataclass(frozen=True, slots=True)
class AlertInfo:
    name: str
    state: str
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float
    active_at: float
    condition: str


@dataclass(frozen=True, slots=True)
class AlertEvent:
    ts: float
    name: str
    event: str
    labels: dict[str, str]
    value: float
    condition: str


@dataclass(frozen=True, slots=True)
class Attempt:
    ts: float
    ok: bool
    error: str
    seconds: float


@dataclass(frozen=True, slots=True)
class NotificationInfo:
    id: int
    notifier: str
    group_key: str
    status: str
    created_at: float
    delivered_at: float | None
    last_error: str
    alerts: tuple[str, ...]
    attempts: tuple[Attempt, ...] = ()


@dataclass(frozen=True, slots=True)
class SourceInfo:
    job: str
    instance: str
    type: str
    health: str
    last_scrape: float
    duration_s: float
    samples: int
    errors: dict[str, int]
    last_error: str
    rejected: tuple[str, ...] = field(default=())


class TuiData(Protocol):
    """Everything the TUI reads (and the one thing it writes). Methods may block: call them in workers."""

    def now(self) -> float: ...

    def daemon(self) -> str | None:
        """host:port of the daemon holding the database, or None."""
        ...

    def series(self, history_s: float = 3600, points: int = 20) -> list[SeriesRow]: ...

    def chart(self, expr: str, start: float, end: float, width: int) -> list[ChartSeries]: ...

    def thresholds(self, expr: str) -> list[Threshold]: ...

    def alerts(self) -> list[AlertInfo]: ...

    def events(self, since: float) -> list[AlertEvent]: ...

    def notifications(self, since: float) -> list[NotificationInfo]: ...

    def sources(self) -> list[SourceInfo]: ...

    def add_silence(self, matchers: dict[str, str], duration_s: float, comment: str) -> str: ...


# ------------------------------------------------------------------ reduction to the screen


def minmax_columns(
    ts: npt.NDArray[np.float64],
    lo: npt.NDArray[np.float64],
    hi: npt.NDArray[np.float64],
    start: float,
    end: float,
    width: int,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per column of ``width`` over ``[start, end]``: the column's middle, min of ``lo``, max of ``hi``.

    Returns the (finite) input untouched when it has no more points than columns; empty columns are skipped.
    """
    ok = np.isfinite(lo) & np.isfinite(hi)
    ts, lo, hi = ts[ok], lo[ok], hi[ok]
    if len(ts) <= width or width <= 0:
        return ts, lo, hi
    span = max(end - start, 1e-9)
    col = np.clip(((ts - start) / span * width).astype(np.int64), 0, width - 1)
    present, first = np.unique(col, return_index=True)
    return start + (present + 0.5) * span / width, np.minimum.reduceat(lo, first), np.maximum.reduceat(hi, first)


def _stats(vals: npt.NDArray[np.float64]) -> tuple[float, float, float, float]:
    v = vals[np.isfinite(vals)]
    if not len(v):
        return (float("nan"),) * 4
    return float(v.min()), float(v.mean()), float(v.max()), float(v[-1])


_THRESHOLD_RE = re.compile(
    r"^\s*(?P<lhs>.+?)\s*(?P<op><=|>=|<|>|==|!=)\s*(?P<num>[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)\s*$"
)
_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def threshold_of(expr: str) -> tuple[str, str, float] | None:
    """``lhs op number`` of an alert expression such as ``ai_model_accuracy{model="m"} < 0.9``, else None."""
    m = _THRESHOLD_RE.match(expr)
    if m is None:
        return None
    return m["lhs"], m["op"], float(m["num"])


def metric_names(expr: str) -> set[str]:
    """Identifiers that may be metric names in ``expr`` (function names included; only used to match)."""
    no_strings = re.sub(r'"[^"]*"|\'[^\']*\'|\{[^}]*\}', " ", expr)
    return set(_NAME_RE.findall(no_strings))


# ------------------------------------------------------------------ the daemon's API


class DaemonClient:
    """JSON over HTTP to the daemon that holds the database (bearer token and TLS from the config)."""

    def __init__(self, listen: str, *, tls: bool = False, token: str | None = None) -> None:
        self.scheme = "https" if tls else "http"
        self.host = listen if not listen.startswith("0.0.0.0") else "127.0.0.1" + listen[7:]
        self.token = token

    @classmethod
    def for_config(cls, cfg: Any, listen: str) -> DaemonClient:
        """A client of the daemon listening on ``listen``, with the config's TLS setting and bearer token."""
        return cls(listen, tls=cfg.server.tls is not None, token=cfg.server.bearer_token())

    def request(self, method: str, path: str, body: Any = None, timeout: float = 60) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        ctx = None
        if self.scheme == "https":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        req = urllib.request.Request(f"{self.scheme}://{self.host}{path}", data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            try:  # the API's JSON error bodies carry the message under "error"
                parsed = json.loads(detail)
                detail = parsed.get("error", detail) if isinstance(parsed, dict) else str(parsed)
            except ValueError:
                pass
            raise MlwatchError(f"the daemon at {self.host} refused the request ({exc.code}): {detail}") from None
        except OSError as exc:
            raise MlwatchError(f"cannot reach the daemon at {self.host}: {exc}") from None
        return json.loads(raw) if raw.strip() else None


# ------------------------------------------------------------------ the implementation


class ReadSide:
    """:class:`TuiData` over a database file: storage reader, PromQL engine, alert store, daemon client."""

    def __init__(
        self,
        db_path: Path,
        *,
        lookback_ms: int = 300_000,
        timeout_ms: int = 30_000,
        max_samples: int = 50_000_000,
        rules: Sequence[tuple[str, str]] = (),
        downsample: Sequence[tuple[int, int]] = ((ROLLUP_AFTER_MS, ROLLUP_STEP_MS),),
        client_factory: Callable[[str], DaemonClient] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from mlwatch.promql.engine import Engine, EngineOptions
        from mlwatch.storage import alertstore
        from mlwatch.storage.database import make_engine
        from mlwatch.storage.reader import Reader

        if not db_path.exists():
            raise MlwatchError(f"no database at {db_path} (start the daemon, or pass --db)")
        self.db_path = db_path
        self._sa = make_engine(f"sqlite:///{db_path}", readonly=True)
        self.reader = Reader(self._sa)
        self.engine = Engine(
            self.reader, EngineOptions(lookback_ms=lookback_ms, timeout_ms=timeout_ms, max_samples=max_samples), clock
        )
        self._conn = alertstore.open_direct(db_path, readonly=True)
        self._downsample = list(downsample)  # (after_ms, step_ms) rollup levels of storage.downsample
        self._rules = list(rules)  # (alertname, expr) of the configured alerting rules
        self._client_factory = client_factory or (lambda listen: DaemonClient(listen))
        self._clock = clock
        self.lookback_ms = lookback_ms

    def close(self) -> None:
        self._conn.close()
        self.reader.close()
        self._sa.dispose()

    def now(self) -> float:
        return self._clock()

    def daemon(self) -> str | None:
        from mlwatch.storage.database import read_lock_owner

        owner = read_lock_owner(self.db_path)
        return str(owner["listen"]) if owner and owner.get("listen") else None

    # ---------------------------------------------------------------- series

    def series(self, history_s: float = 3600, points: int = 20) -> list[SeriesRow]:
        """Every series with its latest value and ``points`` values over the last ``history_s`` (0: none)."""
        from mlwatch.model import Matcher, MatchOp

        now_ms = int(self.now() * 1000)
        infos = self.reader.series([Matcher.make("__name__", MatchOp.RE, ".+")])
        latest = {
            s.series.id: s.value
            for s in self.reader.latest([Matcher.make("__name__", MatchOp.RE, ".+")], now_ms, self.lookback_ms)
        }
        start_ms = now_ms - int(history_s * 1000)
        data = self.reader.read_many([i.id for i in infos], start_ms, now_ms) if history_s > 0 else {}
        rows = []
        for info in infos:
            ts, vals = data.get(info.id, (np.zeros(0, np.int64), np.zeros(0)))
            hist: tuple[float, ...] = ()
            if len(ts):
                edges = np.linspace(start_ms, now_ms, points + 1)
                idx = np.searchsorted(ts, edges[1:], side="right") - 1
                hist = tuple(float(vals[i]) if i >= 0 else float("nan") for i in idx)
            rows.append(SeriesRow(info.key.name, dict(info.key.labels), latest.get(info.id), hist))
        rows.sort(key=lambda r: (r.name, sorted(r.labels.items())))
        return rows

    def chart(self, expr: str, start: float, end: float, width: int) -> list[ChartSeries]:
        """The lines of ``expr`` over ``[start, end]`` reduced to ``width`` columns.

        A plain selector is read directly (rollups for long ranges, raw data after the last rollup)
        and reduced to min/max per column; any other expression is evaluated as a range query with
        one step per column.
        """
        from mlwatch.errors import QueryError
        from mlwatch.promql.selector import parse_selector
        from mlwatch.promql.values import format_labels

        width = max(width, 10)  # columns of the chart
        try:
            matchers = parse_selector(expr)
        except QueryError:
            matchers = None
        if matchers is not None:
            return self._selector_chart(matchers, start, end, width)
        step = max(1000, int((end - start) * 1000 / width) // 1000 * 1000)
        res = self.engine.range(expr, int(start * 1000), int(end * 1000), step)
        if res.kind == "scalar" and res.scalar is not None:
            flat = np.array([res.scalar[1]] * 2)
            return [ChartSeries("scalar", np.array([start, end]), flat, flat, (res.scalar[1],) * 4)]
        out = []
        for labels, ts, vals in res.series:
            v = np.asarray(vals, dtype=np.float64)
            out.append(
                ChartSeries(
                    format_labels(labels) or expr, ts.astype(np.float64) / 1000, v, v, _stats(v), labels=dict(labels)
                )
            )
        return out

    def _selector_chart(self, matchers: list[Any], start: float, end: float, width: int) -> list[ChartSeries]:
        from mlwatch.promql.values import format_labels

        s_ms, e_ms = int(start * 1000), int(end * 1000)
        out = []
        for info in self.reader.series(matchers)[:50]:
            used_rollup = False
            raw_from = s_ms
            parts: list[tuple[npt.NDArray[np.float64], ...]] = []
            agg: list[tuple[float, float, float, float]] = []  # (min, sum, max, count)
            for step_ms in self._rollup_steps(e_ms - s_ms, width):
                bts, cols = self.reader.read_rollup(info.id, step_ms, s_ms, e_ms)
                if len(bts):
                    used_rollup = True
                    raw_from = int(bts[-1]) + step_ms
                    t = bts.astype(np.float64) / 1000 + step_ms / 2000
                    parts.append(minmax_columns(t, cols["min"], cols["max"], start, end, width))
                    cnt = float(cols["count"].sum())
                    if cnt:
                        agg.append(
                            (
                                float(np.nanmin(cols["min"])),
                                float(cols["sum"].sum()),
                                float(np.nanmax(cols["max"])),
                                cnt,
                            )
                        )
                    break
            ts, vals = self.reader.read_range(info.id, raw_from, e_ms)
            live = np.isfinite(vals)  # staleness markers are NaNs
            ts, vals = ts[live], vals[live]
            last = float(vals[-1]) if len(vals) else float("nan")
            if len(vals):
                agg.append((float(vals.min()), float(vals.sum()), float(vals.max()), float(len(vals))))
                parts.append(minmax_columns(ts.astype(np.float64) / 1000, vals, vals, start, end, width))
            if not parts:
                continue
            t_all, lo_all, hi_all = (np.concatenate([p[i] for p in parts]) for i in range(3))
            order = np.argsort(t_all, kind="stable")
            n = sum(a[3] for a in agg)
            stats = (min(a[0] for a in agg), sum(a[1] for a in agg) / n, max(a[2] for a in agg), last)
            name = format_labels((("__name__", info.key.name), *info.key.labels))
            out.append(
                ChartSeries(
                    name,
                    t_all[order],
                    lo_all[order],
                    hi_all[order],
                    stats,
                    used_rollup,
                    {"__name__": info.key.name, **dict(info.key.labels)},
                )
            )
        return out

    def _rollup_steps(self, span_ms: int, width: int) -> list[int]:
        """Rollup steps worth trying for a ``span_ms`` chart: coarsest first, none finer than needed."""
        steps = sorted({step for after, step in self._downsample if span_ms >= after}, reverse=True)
        fine_enough = [st for st in steps if st <= span_ms // max(width, 1)]
        return fine_enough or steps[-1:]

    def thresholds(self, expr: str) -> list[Threshold]:
        """Threshold lines of the alerting rules (configured, or seen in the history) watching ``expr``'s metrics."""
        names = metric_names(expr)
        exprs = set(self._rules) | {(e.name, e.condition) for e in self.events(0) if e.condition}
        shown = self._selected_ids(expr)
        out = []
        for alertname, rule_expr in sorted(exprs):
            parsed = threshold_of(rule_expr)
            if not parsed or not metric_names(parsed[0]) & names:
                continue
            watched = self._selected_ids(parsed[0])
            if shown is None or watched is None or shown & watched:  # the rule watches a charted series
                out.append(Threshold(alertname, parsed[1], parsed[2]))
        return sorted(set(out), key=lambda t: (t.alertname, t.value))

    def _selected_ids(self, expr: str) -> set[int] | None:
        """Ids of the series a plain selector selects; None for any other expression."""
        from mlwatch.errors import QueryError
        from mlwatch.promql.selector import parse_selector

        try:
            return {s.id for s in self.reader.series(parse_selector(expr.strip()))}
        except QueryError:
            return None

    # ---------------------------------------------------------------- alerts, notifications, sources

    def alerts(self) -> list[AlertInfo]:
        from mlwatch.storage import alertstore

        conditions = {e.fingerprint: e.condition for e in alertstore.load_events(self._conn, 0, 100_000)}
        rules = dict(self._rules)
        return [
            AlertInfo(
                a.labels.get("alertname", ""),
                a.state,
                a.labels,
                a.annotations,
                a.value,
                a.active_at,
                conditions.get(a.fingerprint) or rules.get(a.labels.get("alertname", ""), ""),
            )
            for a in alertstore.load_alerts(self._conn)
        ]

    def events(self, since: float) -> list[AlertEvent]:
        from mlwatch.storage import alertstore

        return [
            AlertEvent(e.ts, e.alertname, e.event, e.labels, e.value, e.condition)
            for e in alertstore.load_events(self._conn, since, 100_000)
        ]

    def notifications(self, since: float) -> list[NotificationInfo]:
        from mlwatch.storage import alertstore

        out = []
        for n in alertstore.load_notifications(self._conn, since, 2000):
            alerts = tuple(
                str(a.get("labels", {}).get("alertname", ""))
                for a in n.payload.get("alerts", [])
                if isinstance(a, dict)
            )
            attempts = tuple(Attempt(*a) for a in alertstore.load_attempts(self._conn, n.id))
            out.append(
                NotificationInfo(
                    n.id,
                    n.notifier,
                    n.group_key,
                    n.status,
                    n.created_at,
                    n.delivered_at,
                    n.last_error,
                    alerts,
                    attempts,
                )
            )
        return out

    def sources(self) -> list[SourceInfo]:
        from mlwatch.sources.base import HEALTH_INDEX_KEY, HEALTH_PREFIX

        raw = self.reader.state(HEALTH_INDEX_KEY)
        keys: list[str] = []
        if raw:
            try:
                index = json.loads(raw)
                keys = [k if k.startswith(HEALTH_PREFIX) else HEALTH_PREFIX + k for k in index]
            except ValueError:
                keys = []
        out = []
        for key in keys:
            doc_raw = self.reader.state(key)
            if not doc_raw:
                continue
            d = json.loads(doc_raw)
            out.append(
                SourceInfo(
                    d.get("job", ""),
                    d.get("instance", ""),
                    d.get("type", ""),
                    d.get("health", "unknown"),
                    d.get("last_scrape_ms", 0) / 1000,
                    float(d.get("last_duration_s", 0.0)),
                    int(d.get("samples_total", 0)),
                    dict(d.get("errors_total", {})),
                    d.get("last_error", ""),
                    tuple(d.get("rejected", ())),
                )
            )
        out.sort(key=lambda s: (s.job, s.instance))
        return out

    def add_silence(self, matchers: dict[str, str], duration_s: float, comment: str) -> str:
        """Silence alerts whose labels equal ``matchers``: through the daemon when one runs, else directly."""
        import getpass

        from mlwatch.notify.silences import rfc3339, silence_from_api
        from mlwatch.storage import alertstore

        if duration_s <= 0:
            raise MlwatchError("the duration must be greater than 0")
        now = time.time()
        body = {
            "matchers": [
                {"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in sorted(matchers.items())
            ],
            "startsAt": rfc3339(now),
            "endsAt": rfc3339(now + duration_s),
            "createdBy": getpass.getuser() or "mlwatch",
            "comment": comment,
        }
        listen = self.daemon()
        if listen:
            return str(self._client_factory(listen).request("POST", "/api/v2/silences", body)["silenceID"])
        silence = silence_from_api({**body, "id": str(uuid.uuid4())}, now)
        conn = alertstore.open_direct(self.db_path, readonly=False)
        try:
            alertstore.put_silence(conn, silence.row())
        finally:
            conn.close()
        return silence.id


def open_readside(config_path: str | None, db_url: str | None, clock: Callable[[], float] = time.time) -> ReadSide:
    """The read side for ``mlwatch tui``: the config's database (or ``db_url``), its limits and alerting rules."""
    from mlwatch.config import load_config
    from mlwatch.rules.loading import AlertingRule, build_groups

    cfg = load_config(config_path).with_overrides(db_url=db_url)
    base = Path(config_path).parent if config_path else None
    groups, _problems = build_groups(cfg, base)  # unreadable rule files are check-config's to report
    rules = [(r.name, r.expr) for g in groups for r in g.rules if isinstance(r, AlertingRule)]
    token = cfg.server.bearer_token()
    tls = bool(cfg.server.tls)
    limits = cfg.limits
    return ReadSide(
        cfg.storage.path,
        lookback_ms=limits.lookback_delta,
        timeout_ms=limits.query_timeout,
        max_samples=limits.query_max_samples,
        rules=rules,
        downsample=[(d.after, d.step) for d in cfg.storage.downsample] or [(ROLLUP_AFTER_MS, ROLLUP_STEP_MS)],
        client_factory=lambda listen: DaemonClient(listen, tls=tls, token=token),
        clock=clock,
    )
