"""The TUI's time ranges: a duration back to now (``90m``) or ``START..END`` as ``mlwatch query`` reads times."""

from __future__ import annotations

from mlwatch.model import parse_duration_ms
from mlwatch.promql.errors import BadQuery
from mlwatch.promql.params import parse_time


def parse_range(text: str, now: float) -> tuple[float, float]:
    """(start, end) in seconds of ``text``: ``90m`` (back to ``now``) or ``START..END``.

    START and END are RFC 3339, Unix seconds, ``now`` or relative to now (``-2h``), as ``mlwatch query
    --start/--end`` takes them. Raises ValueError with a message fit for the user.
    """
    t = text.strip()
    if ".." not in t:
        try:
            return now - parse_duration_ms(t) / 1000, now
        except ValueError:
            raise ValueError(
                f"bad range {t!r}: want a duration (90m, 2h, 7d) or START..END (RFC 3339, Unix seconds, -2h, now)"
            ) from None
    a, _, b = t.partition("..")
    if not a.strip() or not b.strip():
        raise ValueError(f"bad range {t!r}: START..END needs both ends")
    now_ms = round(now * 1000)
    try:
        start, end = parse_time(a, now_ms=now_ms) / 1000, parse_time(b, now_ms=now_ms) / 1000
    except BadQuery as exc:
        raise ValueError(f"bad range {t!r}: {exc}") from None
    if end <= start:
        raise ValueError(f"bad range {t!r}: the end must come after the start")
    return start, end
