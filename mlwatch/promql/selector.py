"""Series selectors (``match[]=``, ``{job="x"}``) parsed by promql-parser into storage matchers."""

from __future__ import annotations

import promql_parser

from mlwatch.errors import QueryError
from mlwatch.model import Matcher, MatchOp
from mlwatch.regex import RegexError

_OPS = {"Equal": MatchOp.EQ, "NotEqual": MatchOp.NE, "Re": MatchOp.RE, "NotRe": MatchOp.NRE}


def parse_selector(text: str) -> list[Matcher]:
    """Parse a series selector such as ``up{job=~"api.*"}`` into matchers (``__name__`` included).

    Raises QueryError for anything that is not a plain vector selector, as Prometheus does for ``match[]``.
    """
    try:
        expr = promql_parser.parse(text)
    except ValueError as exc:
        raise QueryError(f"invalid selector {text!r}: {exc}") from None
    if not isinstance(expr, promql_parser.VectorSelector):
        raise QueryError(f"invalid selector {text!r}: expected a series selector such as up{{job=\"x\"}}")
    if expr.at is not None or expr.offset is not None:
        raise QueryError(f"invalid selector {text!r}: offset and @ are not allowed here")
    out: list[Matcher] = []
    if expr.name:
        out.append(Matcher.make("__name__", MatchOp.EQ, expr.name))
    if expr.matchers.or_matchers:
        raise QueryError(f"invalid selector {text!r}: 'or' inside a selector is not supported")
    for m in expr.matchers.matchers:
        op = _OPS[str(m.op).rsplit(".", 1)[-1]]
        try:
            out.append(Matcher.make(m.name, op, m.value))
        except RegexError as exc:
            raise QueryError(f"invalid regex in {text!r}: {exc}") from None
    return out
