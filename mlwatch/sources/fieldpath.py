"""Reading values out of parsed JSON (and regex fields) by path: ``models[0].metrics.accuracy``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mlwatch.config.parts import parse_path

__all__ = ["MISSING", "FieldPath", "to_number"]

MISSING: Any = object()


class FieldPath:
    """A compiled path; ``get(doc)`` returns the value or :data:`MISSING`."""

    __slots__ = ("_simple", "parts", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.parts = parse_path(text)
        self._simple = self.parts[0] if len(self.parts) == 1 and isinstance(self.parts[0], str) else None

    def get(self, doc: Any) -> Any:
        if self._simple is not None:
            if isinstance(doc, Mapping):
                return doc.get(self._simple, MISSING)
            return MISSING
        cur = doc
        for part in self.parts:
            if isinstance(part, int):
                if not isinstance(cur, list) or part >= len(cur):
                    return MISSING
                cur = cur[part]
            else:
                if not isinstance(cur, Mapping) or part not in cur:
                    return MISSING
                cur = cur[part]
        return cur


def to_number(value: Any) -> float | None:
    """A JSON number, bool (1/0) or numeric string as a float; None for anything else (NaN/Inf allowed)."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        if math.isnan(number) and value.strip().lower() not in ("nan", "+nan", "-nan"):
            return None
        return number
    return None
