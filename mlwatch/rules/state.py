"""Alert state: what one alert is, and the transitions of the Prometheus state machine.

``pending`` (the condition holds, ``for`` not yet elapsed) and ``firing`` as Prometheus defines them;
``resolved`` closes an alert's history. Two flap controls delay the resolution of a firing alert:
``keep_firing_for`` (Prometheus) and ``resolve_expr`` (mlwatch's hysteresis: the alert resolves only
once that expression returns the alert's series).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field


class AlertState(str, enum.Enum):
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"  # only in the history and in notifications: an alert that ended


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable id of a label set (hex, 16 digits), as Alertmanager shows fingerprints."""
    h = hashlib.sha256()
    for k, v in sorted(labels.items()):
        h.update(k.encode())
        h.update(b"\xff")
        h.update(v.encode())
        h.update(b"\xff")
    return h.hexdigest()[:16]


@dataclass(slots=True)
class Alert:
    """One alert of one rule. Times are Unix seconds."""

    rule_key: str
    labels: dict[str, str]
    annotations: dict[str, str]
    state: AlertState
    value: float
    active_at: float
    fired_at: float | None = None
    resolved_at: float | None = None
    last_seen: float = 0.0  # the last evaluation at which the condition held
    last_eval: float = 0.0
    resolving_since: float | None = None  # first evaluation without the condition while still firing
    last_sent_am: float | None = None
    source_labels: dict[str, str] = field(default_factory=dict)  # the query result's labels (no __name__)
    condition: str = ""
    samples: float | None = None  # the sample count behind the value, where known (mlwatch.rules.samples)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.labels)

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    def api_dict(self) -> dict[str, object]:
        """The item of Prometheus' ``/api/v1/alerts``."""
        from mlwatch.rules.templates import go_float

        out: dict[str, object] = {
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "state": self.state.value,
            "activeAt": iso(self.active_at),
            "value": go_float(self.value),
        }
        if self.state is AlertState.FIRING and self.resolving_since is not None:
            out["keepFiringSince"] = iso(self.resolving_since)
        return out


def iso(ts: float) -> str:
    """RFC 3339 in UTC as Go's RFC3339Nano prints it (trailing zeros of the fraction dropped)."""
    import datetime as dt

    text = dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "")
    head, _, frac = text.partition(".")
    frac = frac.rstrip("0")
    return f"{head}.{frac}Z" if frac else f"{head}Z"


@dataclass(frozen=True, slots=True)
class Transition:
    """An event for the history: the alert as it was at the transition."""

    ts: float
    event: AlertState
    alert: Alert


def step_present(
    alert: Alert, value: float, labels: dict[str, str], annotations: dict[str, str], t: float, for_s: float
) -> AlertState | None:
    """The condition holds at ``t``: update ``alert``; return the new state if it changed."""
    alert.value = value
    alert.annotations = annotations
    alert.labels = labels
    alert.last_seen = t
    alert.last_eval = t
    alert.resolving_since = None
    if alert.state is AlertState.PENDING and t - alert.active_at >= for_s:
        alert.state = AlertState.FIRING
        alert.fired_at = t
        return AlertState.FIRING
    return None


def step_absent(alert: Alert, t: float, keep_firing_for_s: float, resolve_matched: bool | None) -> bool:
    """The condition does not hold at ``t``: True if the alert resolves now.

    ``resolve_matched`` is None without a ``resolve_expr``; else whether it returned the alert's series.
    """
    alert.last_eval = t
    if alert.state is AlertState.PENDING:
        return True
    if alert.resolving_since is None:
        alert.resolving_since = t
    if keep_firing_for_s > 0 and t - alert.resolving_since < keep_firing_for_s:
        return False
    return resolve_matched is not False
