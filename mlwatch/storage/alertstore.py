"""SQL of alerting: alert state, alert history, silences, the notification outbox and routing state.

Plain functions over a ``sqlite3.Connection``. In the daemon they run on the writer thread
(``Writer.call``), so there is one writer; the CLI and the TUI call the readers on their own
read-only connections, and :func:`open_direct` gives the CLI a write connection when no daemon holds
the database. Writers open their own ``BEGIN IMMEDIATE`` transaction (the writer's connection is in
autocommit mode between group commits).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@contextmanager
def _tx(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if own and conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if own:
        conn.execute("COMMIT")


def open_direct(db_path: str | Path, readonly: bool = False) -> sqlite3.Connection:
    """A connection for the CLI (autocommit mode, so the functions here manage transactions)."""
    uri = f"file:{Path(db_path)}{'?mode=ro' if readonly else ''}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10.0, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def _j(d: Any) -> str:
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


# ------------------------------------------------------------------ alert state and history


@dataclass(frozen=True, slots=True)
class AlertRow:
    rule_key: str
    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    state: str
    value: float
    active_at: float
    fired_at: float | None
    last_seen: float
    last_eval: float
    resolving_since: float | None
    last_sent_am: float | None


@dataclass(frozen=True, slots=True)
class EventRow:
    ts: float
    fingerprint: str
    alertname: str
    event: str
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float
    active_at: float
    condition: str = ""
    id: int = 0


_ALERT_COLS = (
    "rule_key, fingerprint, labels, annotations, state, value, active_at, fired_at, last_seen, "
    "last_eval, resolving_since, last_sent_am"
)


def save_alerts(
    conn: sqlite3.Connection,
    upserts: Sequence[AlertRow],
    deletes: Sequence[tuple[str, str]],
    events: Sequence[EventRow],
) -> None:
    """One evaluation's changes, in one transaction."""
    with _tx(conn):
        conn.executemany(
            f"INSERT OR REPLACE INTO alerts ({_ALERT_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    a.rule_key,
                    a.fingerprint,
                    _j(a.labels),
                    _j(a.annotations),
                    a.state,
                    a.value,
                    a.active_at,
                    a.fired_at,
                    a.last_seen,
                    a.last_eval,
                    a.resolving_since,
                    a.last_sent_am,
                )
                for a in upserts
            ],
        )
        conn.executemany("DELETE FROM alerts WHERE rule_key = ? AND fingerprint = ?", list(deletes))
        conn.executemany(
            "INSERT INTO alert_events (ts, fingerprint, alertname, event, labels, annotations, value, active_at, "
            "condition) VALUES (?,?,?,?,?,?,?,?,?)",
            [
                (
                    e.ts,
                    e.fingerprint,
                    e.alertname,
                    e.event,
                    _j(e.labels),
                    _j(e.annotations),
                    e.value,
                    e.active_at,
                    e.condition,
                )
                for e in events
            ],
        )


def drop_alerts_except(conn: sqlite3.Connection, rule_keys: Sequence[str], now: float) -> list[EventRow]:
    """Resolve the stored alerts of rules that no longer exist (after a reload); returns their events."""
    keep = set(rule_keys)
    gone = [a for a in load_alerts(conn) if a.rule_key not in keep]
    events = [
        EventRow(
            now,
            a.fingerprint,
            a.labels.get("alertname", ""),
            "resolved",
            a.labels,
            a.annotations,
            a.value,
            a.active_at,
            "rule removed",
        )
        for a in gone
    ]
    save_alerts(conn, [], [(a.rule_key, a.fingerprint) for a in gone], events)
    return events


def load_alerts(conn: sqlite3.Connection) -> list[AlertRow]:
    rows = conn.execute(f"SELECT {_ALERT_COLS} FROM alerts ORDER BY active_at, fingerprint").fetchall()
    return [AlertRow(r[0], r[1], json.loads(r[2]), json.loads(r[3]), *r[4:]) for r in rows]


def load_events(
    conn: sqlite3.Connection, since: float = 0.0, limit: int = 10_000, fingerprint: str | None = None
) -> list[EventRow]:
    """The alert history since ``since`` (newest last)."""
    sql = (
        "SELECT ts, fingerprint, alertname, event, labels, annotations, value, active_at, condition, id "
        "FROM alert_events WHERE ts >= ?"
    )
    args: list[Any] = [since]
    if fingerprint is not None:
        sql += " AND fingerprint = ?"
        args.append(fingerprint)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit)
    rows = conn.execute(sql, args).fetchall()
    return [EventRow(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]), *r[6:]) for r in reversed(rows)]


# ------------------------------------------------------------------ silences


@dataclass(frozen=True, slots=True)
class SilenceRow:
    id: str
    matchers: list[dict[str, Any]]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    updated_at: float


def put_silence(conn: sqlite3.Connection, s: SilenceRow) -> None:
    with _tx(conn):
        conn.execute(
            "INSERT OR REPLACE INTO silences (id, matchers, starts_at, ends_at, created_by, comment, updated_at) "
            "VALUES (?,?,?,?,?,?,?)",
            (s.id, _j(s.matchers), s.starts_at, s.ends_at, s.created_by, s.comment, s.updated_at),
        )


def expire_silence(conn: sqlite3.Connection, silence_id: str, now: float) -> bool:
    """End a silence now; False if there is none with this id or it already ended."""
    with _tx(conn):
        cur = conn.execute(
            "UPDATE silences SET ends_at = ?, updated_at = ? WHERE id = ? AND ends_at > ?", (now, now, silence_id, now)
        )
        return cur.rowcount > 0


def load_silences(conn: sqlite3.Connection) -> list[SilenceRow]:
    rows = conn.execute(
        "SELECT id, matchers, starts_at, ends_at, created_by, comment, updated_at FROM silences ORDER BY starts_at, id"
    ).fetchall()
    return [SilenceRow(r[0], json.loads(r[1]), *r[2:]) for r in rows]


def delete_silences_before(conn: sqlite3.Connection, cutoff: float) -> int:
    with _tx(conn):
        return conn.execute("DELETE FROM silences WHERE ends_at < ?", (cutoff,)).rowcount


# ------------------------------------------------------------------ the outbox


@dataclass(frozen=True, slots=True)
class NotificationRow:
    id: int
    key: str
    notifier: str
    group_key: str
    payload: dict[str, Any]
    status: str
    created_at: float
    next_attempt_at: float
    expires_at: float
    attempts: int
    last_error: str
    delivered_at: float | None


_N_COLS = (
    "id, key, notifier, group_key, payload, status, created_at, next_attempt_at, expires_at, attempts, "
    "last_error, delivered_at"
)


def _nrow(r: Sequence[Any]) -> NotificationRow:
    return NotificationRow(r[0], r[1], r[2], r[3], json.loads(r[4]), *r[5:])


def enqueue(
    conn: sqlite3.Connection,
    items: Sequence[tuple[str, str, str, dict[str, Any], float, float]],
    group_state: Sequence[tuple[str, float, str, list[str]]] = (),
) -> int:
    """Store notifications ``(key, notifier, group_key, payload, now, expires_at)`` before any is sent,
    together with the routing state that produced them; a key already stored is skipped."""
    with _tx(conn):
        n = 0
        for key, notifier, group_key, payload, now, expires in items:
            cur = conn.execute(
                "INSERT OR IGNORE INTO notifications (key, notifier, group_key, payload, status, created_at, "
                "next_attempt_at, expires_at) VALUES (?,?,?,?,'pending',?,?,?)",
                (key, notifier, group_key, _j(payload), now, now, expires),
            )
            n += cur.rowcount
        conn.executemany(
            "INSERT OR REPLACE INTO notify_groups (key, last_sent, last_hash, firing) VALUES (?,?,?,?)",
            [(k, t, h, _j(f)) for k, t, h, f in group_state],
        )
        return n


def due_notifications(conn: sqlite3.Connection, now: float, limit: int = 100) -> list[NotificationRow]:
    """Pending notifications due by ``now``. A group's notifications to one notifier go out in the order
    they were made: one waits while an older one of its group (a test notification excepted) is pending,
    so after an outage a receiver never hears "resolved" before the "firing" it ends."""
    rows = conn.execute(
        f"SELECT {_N_COLS} FROM notifications AS n WHERE status = 'pending' AND next_attempt_at <= ? "
        "AND (group_key = 'test' OR NOT EXISTS (SELECT 1 FROM notifications AS o WHERE o.status = 'pending' "
        "AND o.notifier = n.notifier AND o.group_key = n.group_key AND o.id < n.id)) "
        "ORDER BY next_attempt_at, id LIMIT ?",
        (now, limit),
    ).fetchall()
    return [_nrow(r) for r in rows]


def next_due(conn: sqlite3.Connection) -> float | None:
    row = conn.execute("SELECT MIN(next_attempt_at) FROM notifications WHERE status = 'pending'").fetchone()
    return None if row is None or row[0] is None else float(row[0])


def record_attempt(
    conn: sqlite3.Connection,
    nid: int,
    ts: float,
    ok: bool,
    error: str,
    seconds: float,
    status: str,
    next_attempt_at: float,
) -> None:
    """One delivery attempt: its outcome, and the notification's new status and next attempt time."""
    with _tx(conn):
        conn.execute(
            "INSERT INTO notification_attempts (notification_id, ts, ok, error, seconds) VALUES (?,?,?,?,?)",
            (nid, ts, int(ok), error, seconds),
        )
        conn.execute(
            "UPDATE notifications SET attempts = attempts + 1, status = ?, next_attempt_at = ?, last_error = ?, "
            "delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END WHERE id = ?",
            (status, next_attempt_at, error, status, ts, nid),
        )


def load_notifications(conn: sqlite3.Connection, since: float = 0.0, limit: int = 1000) -> list[NotificationRow]:
    rows = conn.execute(
        f"SELECT {_N_COLS} FROM notifications WHERE created_at >= ? ORDER BY id DESC LIMIT ?", (since, limit)
    ).fetchall()
    return [_nrow(r) for r in reversed(rows)]


def load_attempts(conn: sqlite3.Connection, nid: int) -> list[tuple[float, bool, str, float]]:
    rows = conn.execute(
        "SELECT ts, ok, error, seconds FROM notification_attempts WHERE notification_id = ? ORDER BY id", (nid,)
    ).fetchall()
    return [(r[0], bool(r[1]), r[2], r[3]) for r in rows]


def load_groups(conn: sqlite3.Connection) -> dict[str, tuple[float, str, list[str]]]:
    rows = conn.execute("SELECT key, last_sent, last_hash, firing FROM notify_groups").fetchall()
    return {r[0]: (r[1], r[2], json.loads(r[3])) for r in rows}


def delete_groups(conn: sqlite3.Connection, keys: Sequence[str]) -> None:
    with _tx(conn):
        conn.executemany("DELETE FROM notify_groups WHERE key = ?", [(k,) for k in keys])


Fn = Callable[[sqlite3.Connection], T]


def delete_history_before(conn: sqlite3.Connection, cutoff: float) -> int:
    """Retention of alerting data: alert events, finished notifications (with their attempts) and
    silences that ended before ``cutoff``; returns the rows deleted."""
    with _tx(conn):
        n = conn.execute("DELETE FROM alert_events WHERE ts < ?", (cutoff,)).rowcount
        n += conn.execute(
            "DELETE FROM notification_attempts WHERE notification_id IN (SELECT id FROM notifications "
            "WHERE status != 'pending' AND created_at < ?)",
            (cutoff,),
        ).rowcount
        n += conn.execute("DELETE FROM notifications WHERE status != 'pending' AND created_at < ?", (cutoff,)).rowcount
        n += conn.execute("DELETE FROM silences WHERE ends_at < ?", (cutoff,)).rowcount
        return n
