"""The regular expressions users write (PromQL matchers and ``label_replace``, metric relabelling, route and
silence matchers) run on RE2, as in Prometheus and Alertmanager: time linear in the input whatever the
pattern, so no query, silence or label value can stall the daemon (Python's backtracking ``re`` takes minutes
on ``(a+)+b`` against 30 letters while holding the GIL), and RE2's syntax (``[[:alpha:]]``, ``\\pL``; no
lookarounds or backreferences, which Prometheus refuses too).

Log line patterns (``format: regex``) stay on Python's ``re``: the operator writes them, and they use its
named groups."""

from __future__ import annotations

import functools
from typing import Any

import re2  # type: ignore[import-untyped]

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print every bad pattern to stderr; the caller reports it instead


class RegexError(ValueError):
    """A pattern RE2 does not accept; the message says why."""


@functools.lru_cache(maxsize=4096)
def compile_regex(pattern: str, *, anchored: bool = False, dotall: bool = False) -> Any:
    """``pattern`` compiled by RE2; ``anchored`` wraps it in ``^(?:...)$`` as Prometheus does, ``dotall`` lets
    ``.`` match a newline. Cached: routes and silences match with the same few patterns again and again."""
    text = f"^(?:{pattern})$" if anchored else pattern
    if dotall:
        text = f"(?s){text}"
    try:
        return re2.compile(text, _OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise RegexError(f"error parsing regexp: {detail}") from None
