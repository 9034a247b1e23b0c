"""Silences as Alertmanager defines them: matchers, a time range, who and why.

Matchers are written as the CLI and ``amtool`` take them (``alertname=AccuracyLow``,
``model=~"m.*"``, ``env!=dev``, ``job!~"test.*"``); regexes are anchored. The JSON shapes are
Alertmanager's API v2 (``postableSilence``, ``gettableSilence``).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlwatch.errors import MlwatchError
from mlwatch.regex import RegexError, compile_regex
from mlwatch.storage.alertstore import SilenceRow


class SilenceError(MlwatchError):
    """A malformed silence or matcher."""


@dataclass(frozen=True, slots=True)
class LabelMatcher:
    name: str
    value: str
    is_regex: bool = False
    is_equal: bool = True

    def matches(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.name, "")
        hit = compile_regex(self.value, dotall=True).fullmatch(v) is not None if self.is_regex else v == self.value
        return hit if self.is_equal else not hit

    def api(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "isRegex": self.is_regex, "isEqual": self.is_equal}

    def __str__(self) -> str:
        op = ("=~" if self.is_regex else "=") if self.is_equal else ("!~" if self.is_regex else "!=")
        v = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{op}"{v}"'


_MATCHER_RE = re.compile(r"^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)


def parse_matcher(text: str) -> LabelMatcher:
    """``name=value``, ``name!=value``, ``name=~regex``, ``name!~regex``; the value may be quoted."""
    m = _MATCHER_RE.match(text)
    if m is None:
        raise SilenceError(f"invalid matcher {text!r}: expected name=value, name!=value, name=~regex or name!~regex")
    name, op, value = m.groups()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return make_matcher(name, value, op in ("=~", "!~"), op in ("=", "=~"))


def make_matcher(name: str, value: str, is_regex: bool, is_equal: bool) -> LabelMatcher:
    if is_regex:
        try:
            compile_regex(value, dotall=True)
        except RegexError as exc:
            raise SilenceError(f"invalid regex in matcher {name}: {exc}") from None
    return LabelMatcher(name, value, is_regex, is_equal)


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    matchers: tuple[LabelMatcher, ...]
    starts_at: float
    ends_at: float
    created_by: str = ""
    comment: str = ""
    updated_at: float = 0.0

    def state(self, now: float) -> str:
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    def mutes(self, labels: Mapping[str, str], now: float) -> bool:
        return self.state(now) == "active" and all(m.matches(labels) for m in self.matchers)

    def api(self, now: float) -> dict[str, Any]:
        """Alertmanager's ``gettableSilence``."""
        return {
            "id": self.id,
            "status": {"state": self.state(now)},
            "updatedAt": rfc3339(self.updated_at),
            "matchers": [m.api() for m in self.matchers],
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(self.ends_at),
            "createdBy": self.created_by,
            "comment": self.comment,
        }

    def row(self) -> SilenceRow:
        return SilenceRow(
            self.id,
            [m.api() for m in self.matchers],
            self.starts_at,
            self.ends_at,
            self.created_by,
            self.comment,
            self.updated_at,
        )

    @classmethod
    def from_row(cls, r: SilenceRow) -> Silence:
        return cls(
            r.id,
            tuple(
                LabelMatcher(m["name"], m["value"], bool(m.get("isRegex")), bool(m.get("isEqual", True)))
                for m in r.matchers
            ),
            r.starts_at,
            r.ends_at,
            r.created_by,
            r.comment,
            r.updated_at,
        )


def rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(text: str) -> float:
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise SilenceError(f"invalid time {text!r} (expected RFC 3339)") from None


def silence_from_api(body: Any, now: float) -> Silence:
    """Validate an Alertmanager ``postableSilence``; a new id unless the body names one."""
    if not isinstance(body, Mapping):
        raise SilenceError("expected a JSON object")
    raw = body.get("matchers")
    if not isinstance(raw, list) or not raw:
        raise SilenceError("matchers: at least one matcher is required")
    matchers = []
    for i, m in enumerate(raw):
        if not isinstance(m, Mapping) or not isinstance(m.get("name"), str) or not isinstance(m.get("value"), str):
            raise SilenceError(f"matchers[{i}]: expected {{name, value, isRegex}}")
        matchers.append(
            make_matcher(m["name"], m["value"], bool(m.get("isRegex", False)), bool(m.get("isEqual", True)))
        )
    if all(m.matches({}) for m in matchers):
        raise SilenceError("at least one matcher must not match the empty string (a silence would mute everything)")
    starts = parse_rfc3339(body["startsAt"]) if body.get("startsAt") else now
    if "endsAt" not in body:
        raise SilenceError("endsAt is required")
    ends = parse_rfc3339(str(body["endsAt"]))
    if ends <= starts:
        raise SilenceError("endsAt must be after startsAt")
    if ends <= now:
        raise SilenceError("endsAt is in the past")
    sid = str(body.get("id") or uuid.uuid4())
    return Silence(
        sid,
        tuple(matchers),
        max(starts, now) if not body.get("startsAt") else starts,
        ends,
        str(body.get("createdBy", "")),
        str(body.get("comment", "")),
        now,
    )


def muted_by(labels: Mapping[str, str], silences: Sequence[Silence], now: float) -> list[str]:
    """Ids of the silences that mute an alert with these labels now."""
    return [s.id for s in silences if s.mutes(labels, now)]


def silence_command(labels: Mapping[str, str], keys: Sequence[str] = ("alertname",)) -> str:
    """A ready-to-paste ``mlwatch silence add`` for an alert."""
    parts = [str(LabelMatcher(k, labels[k])) for k in dict.fromkeys(keys) if k in labels] or [
        str(LabelMatcher(k, v)) for k, v in sorted(labels.items())
    ]
    return "mlwatch silence add " + " ".join(f"'{p}'" for p in parts) + " --duration 2h --comment '...'"
