"""A chunk of parsed log lines that line operators take at once, with its columns extracted once.

A log source parses a chunk of lines (orjson) into dicts once; every operator that can take the chunk
whole (``take_chunk``) reads the fields it needs through one :class:`LineChunk`, which extracts each
field's column and factorises it (distinct values -> small integer codes) once, shared by all operators.
Numbers come out as numpy arrays, so operators aggregate a chunk with ``np.bincount`` instead of a
Python call per line. A column that needs per-line attention (a missing value, a non-number) reads as
None, and the operator falls back to its per-line ``feed`` for that chunk.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import numpy as np

from mlwatch.config.ml import class_text
from mlwatch.sources.fieldpath import MISSING, FieldPath

__all__ = ["LineChunk", "factorize"]

Codes = tuple[np.ndarray, list[str]]  # per line the index of its value's text in the list of distinct texts

_MISSING_TYPES = frozenset((type(None), type(MISSING)))


def factorize(texts: Sequence[str]) -> Codes:
    """Codes of a column of texts: ``uniques[codes[i]] == texts[i]`` (uniques in order of appearance)."""
    return _codes(texts, list(dict.fromkeys(texts)))  # distinct values at C speed


def _int_codes(arr: np.ndarray) -> Codes:
    """Codes of an integer column (uniques as class texts): a bincount over the range when it is small."""
    lo, hi = int(arr.min()), int(arr.max())
    if hi - lo >= 1 << 16:
        uniq, inverse = np.unique(arr, return_inverse=True)
        return inverse.astype(np.intp, copy=False).reshape(-1), [str(int(u)) for u in uniq.tolist()]
    shifted = arr - lo
    present = np.flatnonzero(np.bincount(shifted))
    remap = np.zeros(hi - lo + 1, dtype=np.intp)
    remap[present] = np.arange(len(present), dtype=np.intp)
    return remap[shifted], [str(int(v) + lo) for v in present.tolist()]


def _codes(texts: Sequence[str], uniques: list[str]) -> Codes:
    if len(uniques) == 1:
        return np.zeros(len(texts), dtype=np.intp), uniques
    index = {u: i for i, u in enumerate(uniques)}
    codes = np.fromiter(map(index.__getitem__, texts), dtype=np.intp, count=len(texts))
    return codes, uniques


class LineChunk:
    """Parsed lines (``docs``) and their times: one time for all (``int``) or one per line (an int64 array)."""

    __slots__ = ("_cache", "docs", "ts")

    def __init__(self, docs: list[dict[str, Any]], ts: int | np.ndarray) -> None:
        self.docs = docs
        self.ts = ts
        self._cache: dict[tuple[str, str], Any] = {}

    def __len__(self) -> int:
        return len(self.docs)

    def ts_max(self) -> int:
        return self.ts if isinstance(self.ts, int) else int(self.ts.max())

    def column(self, path: FieldPath) -> Sequence[Any]:
        """The values of ``path`` per line (:data:`MISSING` where absent)."""
        simple = _simple(path)
        key = ("col", simple) if simple is not None else ("path", path.text)
        col = self._cache.get(key)
        if col is None:
            if simple is not None:
                try:  # every line has the field (the usual case): at C speed
                    col = list(map(itemgetter(simple), self.docs))
                except KeyError:
                    col = [d.get(simple, MISSING) for d in self.docs]
            else:
                col = [path.get(d) for d in self.docs]
            self._cache[key] = col
        return col

    def types(self, path: FieldPath) -> frozenset[type]:
        key = ("types", path.text)
        got = self._cache.get(key)
        if got is None:
            got = self._cache[key] = frozenset(map(type, self.column(path)))
        return got

    def strings(self, path: FieldPath) -> Codes | None:
        """Codes of a column whose every value is a string; None otherwise."""
        key = ("str", path.text)
        if key not in self._cache:
            col = self.column(path)
            uniques: list[Any] = [None]  # not all strings
            if not col or type(col[0]) is str:
                try:  # the distinct values at C speed: no other type equals a str, so they tell whether all are
                    uniques = list(dict.fromkeys(col))
                except TypeError:
                    pass  # a list or an object: not strings
            self._cache[key] = _codes(col, uniques) if all(type(u) is str for u in uniques) else None
        return self._cache[key]  # type: ignore[no-any-return]

    def classes(self, path: FieldPath) -> Codes | None:
        """Codes of a column as class texts (:func:`~mlwatch.config.ml.class_text`); None when a line
        lacks the field (or has null)."""
        key = ("class", path.text)
        if key in self._cache:
            return self._cache[key]  # type: ignore[no-any-return]
        out: Codes | None = self.strings(path)
        if out is not None:
            pass  # all strings: the usual case
        elif (types := self.types(path)) & _MISSING_TYPES:
            out = None
        elif types == {int}:  # small integer classes: factorised in numpy, the texts made per distinct value
            try:
                arr = np.asarray(self.column(path), dtype=np.int64)
            except OverflowError:
                out = factorize([class_text(v) for v in self.column(path)])
            else:
                out = _int_codes(arr)
        else:  # mixed: 1, 1.0 and "1" are the same class
            out = factorize([class_text(v) for v in self.column(path)])
        self._cache[key] = out
        return out

    def numbers(self, path: FieldPath) -> np.ndarray | None:
        """The column as float64 when every value is a JSON number or a bool (1/0, as
        :func:`~mlwatch.sources.fieldpath.to_number` reads it); None when one is a string, null, missing..."""
        key = ("num", path.text)
        if key not in self._cache:
            try:  # array('d') takes exactly floats, ints and bools, converted as float() does
                out: np.ndarray | None = np.frombuffer(array("d", self.column(path)), dtype=np.float64)
            except (TypeError, OverflowError):
                out = None
            self._cache[key] = out
        return self._cache[key]  # type: ignore[no-any-return]


def _simple(path: FieldPath) -> str | None:
    return path.parts[0] if len(path.parts) == 1 and isinstance(path.parts[0], str) else None
