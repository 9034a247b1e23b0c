"""Query errors with the error type the Prometheus HTTP API reports for them.

    QueryError (mlwatch.errors)
     ├── BadQuery           a malformed expression or parameter: ``bad_data``, HTTP 400
     ├── ExecutionError     a well-formed query that fails to evaluate: ``execution``, HTTP 422
     │    ├── TooManySamples     ``limits.query_max_samples`` exceeded
     │    └── Unsupported        a valid PromQL construct mlwatch does not evaluate
     └── QueryTimeout       ``limits.query_timeout`` exceeded: ``timeout``, HTTP 503
"""

from __future__ import annotations

from mlwatch.errors import QueryError


class BadQuery(QueryError):
    error_type = "bad_data"
    status = 400


class ExecutionError(QueryError):
    error_type = "execution"
    status = 422


class TooManySamples(ExecutionError):
    def __init__(self) -> None:
        super().__init__("query processing would load too many samples into memory in query execution")


class Unsupported(ExecutionError):
    def __init__(self, construct: str) -> None:
        super().__init__(f"unsupported in mlwatch: {construct}")


class QueryTimeout(QueryError):
    error_type = "timeout"
    status = 503

    def __init__(self, where: str = "expression evaluation") -> None:
        super().__init__(f"query timed out in {where}")


def error_type(exc: QueryError) -> tuple[str, int]:
    """The API's ``errorType`` and HTTP status for ``exc``."""
    return getattr(exc, "error_type", "bad_data"), getattr(exc, "status", 400)
