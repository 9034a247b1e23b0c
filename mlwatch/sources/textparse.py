"""A fast parser of Prometheus text exposition format 0.0.4.

It accepts exactly what Pushgateway 1.5 (``expfmt.TextParser``) accepts and rejects what it
rejects, checked against the real thing: a space before ``{``, blanks inside the braces and a
trailing comma are fine; a line must end in ``\\n`` (a last line without one is "unexpected end
of input stream"), a blank after the value must be followed by a timestamp, and nothing may
follow the timestamp; label values know the escapes ``\\\\``, ``\\"`` and ``\\n`` only, HELP texts
``\\\\`` and ``\\n`` only; values are Go floats (``NaN``, ``Inf``, ``+Inf``, ``-Inf``,
``infinity``, any case, but no ``+NaN``, hex, ``_`` or overflow); timestamps are integers.

Samples of one family may be spread over the body (they are merged, as expfmt does); a sample
name ``x_sum``/``x_count`` (and ``x_bucket``) belongs to family ``x`` if ``x`` was typed
summary (histogram) before, otherwise it is a family of its own. A histogram bucket's ``le`` and
a summary's ``quantile`` must parse as floats.

Also here: Go's float formatting (:func:`go_float`, :func:`format_float`), which the writer of
the format and the Pushgateway API need.

Speed, with no per-character loops: lines in the usual layout are split with string methods,
their series part (everything before the value) parsed once and cached, like Prometheus' scrape
cache, so a :class:`TextParser` reused for the next body of a source only converts values
(~7x prometheus_client's parser on a 100k-line body; ~3x for a body never seen). Anything else
goes through one compiled regular expression per line; a slow, careful scanner runs only to
describe an error.
"""

from __future__ import annotations

import math
import re

from mlwatch.errors import ParseError
from mlwatch.model import FamilySample, MetricFamily, MetricType

__all__ = ["TextParser", "format_float", "go_float", "parse_go_float", "parse_text"]

_B = "[ \\t]"
_NAME = "[a-zA-Z_:][a-zA-Z0-9_:]*"
_VALUE = (
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?)"
    r"|[nN][aA][nN]"
)
# name, label blob, value, timestamp. The label blob allows quoted strings with escapes.
_LNAME = "[a-zA-Z_][a-zA-Z0-9_]*"
_QUOTED = r'"[^"\\]*+(?:\\.[^"\\]*+)*+"'  # possessive: no backtracking state kept per byte
_PAIR = f"[ \t]*{_LNAME}[ \t]*=[ \t]*{_QUOTED}[ \t]*"
# name, label set (validated here, split by _PAIR_RE), value, timestamp.
_SAMPLE_RE = re.compile(
    f"[ \t]*({_NAME})[ \t]*"
    + f"(?:\\{{((?:{_PAIR},)*+(?:{_PAIR})?[ \t]*)\\}}[ \t]*)?"
    + f"(?<=[ \t}}])({_VALUE})(?:[ \t]+([+-]?[0-9]+))?"
)
_PAIR_RE = re.compile(f'({_LNAME})[ \t]*=[ \t]*"([^"\\\\]*+(?:\\\\.[^"\\\\]*+)*+)"')
_FLOAT_RE = re.compile(_VALUE)
_ESCAPE_RE = re.compile(r"\\(.)")
_LABEL_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_HELP_ESCAPES = {"\\": "\\", "n": "\n"}
_TYPES = {t.value: t for t in MetricType}


def go_float(value: float) -> str:
    """Go's ``strconv.FormatFloat(value, 'g', -1, 64)`` (also ``fmt.Sprint`` of a float64)."""
    if math.isnan(value):
        return "NaN"
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    r = repr(value)
    mag = -value if value < 0 else value
    if "e" not in r and (1e-4 <= mag < 1e6 or value == 0):
        # Python's repr and Go's %g agree here, except for the ".0" Python adds to integers.
        return r.removesuffix(".0")
    # Shortest round-trip digits are identical in Python and Go; only the layout differs.
    neg = r.startswith("-")
    body = r[1:] if neg else r
    if "e" in body:
        mant, exp_s = body.split("e")
        digits = mant.replace(".", "")
        dp = int(exp_s) + 1
    else:
        whole, _, frac = body.partition(".")
        if whole == "0":
            stripped = frac.lstrip("0")
            dp = -(len(frac) - len(stripped))
            digits = stripped
        else:
            digits = whole + frac
            dp = len(whole)
    digits = digits.rstrip("0") or "0"
    exp = dp - 1
    sign = "-" if neg else ""
    if exp < -4 or exp >= 6:
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mant}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if dp <= 0:
        return f"{sign}0.{'0' * -dp}{digits}"
    if dp >= len(digits):
        return sign + digits + "0" * (dp - len(digits))
    return f"{sign}{digits[:dp]}.{digits[dp:]}"


def format_float(value: float) -> str:
    """A sample value as expfmt's ``writeFloat`` prints it."""
    if value == 0:
        return "0"
    if value == 1:
        return "1"
    if value == -1:
        return "-1"
    return go_float(value)


def parse_go_float(text: str) -> float:
    """Parse a float as Go's ``strconv.ParseFloat`` does for expfmt; ValueError otherwise."""
    if _FLOAT_RE.fullmatch(text) is None:
        raise ValueError(text)
    v = float(text)
    if v in (math.inf, -math.inf) and "n" not in text and "N" not in text:
        raise ValueError(text)  # out of range: Go refuses, Python would say inf
    return v


def _unescape(raw: str, escapes: dict[str, str], lineno: int) -> str:
    def sub(m: re.Match[str]) -> str:
        c = m.group(1)
        try:
            return escapes[c]
        except KeyError:
            raise ParseError(f"invalid escape sequence '\\{c}'", lineno) from None

    if raw.endswith("\\") and (len(raw) - len(raw.rstrip("\\"))) % 2:
        raise ParseError("invalid escape sequence at end of line", lineno)
    return _ESCAPE_RE.sub(sub, raw)


def _parse_labels(blob: str, name: str, lineno: int) -> dict[str, str]:
    """Labels of a label set that the sample regex has already validated."""
    pairs = _PAIR_RE.findall(blob)
    labels = dict(pairs)
    if len(labels) != len(pairs):
        raise ParseError(f'duplicate label names for metric "{name}"', lineno)
    if "__name__" in labels:
        raise ParseError('label name "__name__" is reserved', lineno)
    if "\\" in blob:
        for k, v in pairs:
            if "\\" in v:
                labels[k] = _unescape(v, _LABEL_ESCAPES, lineno)
    return labels


def _split_blank(s: str) -> tuple[str, str, str]:
    m = re.search(r"[ \t]", s)
    return (s, "", "") if m is None else (s[: m.start()], m.group(0), s[m.end():])


def _diagnose(line: str, lineno: int) -> ParseError:
    """The error a line that the fast path refused deserves (mirrors expfmt's messages)."""
    s = line.lstrip(" \t")
    m = re.match(_NAME, s)
    if m is None:
        return ParseError(f"invalid metric name in {line[:60]!r}", lineno)
    name = m.group(0)
    s = s[m.end():]
    if s and s[0] not in " \t{":
        return ParseError(f"invalid metric name {(name + _split_blank(s)[0])[:60]!r}", lineno)
    s = s.lstrip(" \t")
    if s.startswith("{"):
        s = s[1:]
        # Scan the label set: names, '=', quoted values, separators.
        while True:
            s = s.lstrip(" \t")
            if s.startswith("}"):
                s = s[1:]
                break
            lm = re.match(r"[a-zA-Z_][a-zA-Z0-9_]*", s)
            if lm is None:
                return ParseError(f'invalid label name for metric "{name}"', lineno)
            s = s[lm.end():].lstrip(" \t")
            if not s.startswith("="):
                return ParseError(f"expected '=' after label name {lm.group(0)!r}, found {s[:1]!r}", lineno)
            s = s[1:].lstrip(" \t")
            if not s.startswith('"'):
                return ParseError(f"expected '\"' at start of label value, found {s[:1]!r}", lineno)
            vm = re.match(r'"([^"\\]*+(?:\\.[^"\\]*+)*+)"', s)  # possessive: linear memory
            if vm is None:
                return ParseError(f"unexpected end of label value {s[1:41]!r}", lineno)
            try:
                _unescape(vm.group(1), _LABEL_ESCAPES, lineno)
            except ParseError as exc:
                return exc
            s = s[vm.end():].lstrip(" \t")
            if s.startswith(","):
                s = s[1:]
            elif not s.startswith("}"):
                return ParseError(f"expected ',' or '}}' after label value, found {s[:1]!r}", lineno)
        s = s.lstrip(" \t")
    value, blank, rest = _split_blank(s)
    try:
        parse_go_float(value)
    except ValueError:
        return ParseError(f"expected float as value, got {value[:40]!r}", lineno)
    if blank:
        ts, blank, tail = _split_blank(rest.lstrip(" \t"))
        if not re.fullmatch(r"[+-]?[0-9]+", ts):
            return ParseError(f"expected integer as timestamp, got {ts[:40]!r}", lineno)
        if blank:
            return ParseError(f"spurious string after timestamp: {(blank + tail)[:40]!r}", lineno)
        return ParseError(f"timestamp {ts[:40]} out of range", lineno)
    return ParseError(f"cannot parse sample line {line[:60]!r}", lineno)


_RAW_NAME_RE = re.compile(f"[ \t]*({_NAME})[ \t]*")
_FIRST_SEP_RE = re.compile(f"[ \t]*({_LNAME})[ \t]*=[ \t]*")
_NEXT_SEP_RE = re.compile(f"[ \t]*,[ \t]*({_LNAME})[ \t]*=[ \t]*")
_SPECIAL_VALUES = {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf, "Inf": math.inf}
_INF = (math.inf, -math.inf)
_FLOAT_CHARS = "0123456789.eE+-"  # with these alone, Python's float() accepts what Go's ParseFloat does


class _FastPath:
    """Sample lines in the usual layout, parsed with string methods and caches.

    ``_series(prefix)`` parses the series part of a line and ``sample()`` the rest; each returns
    None when the line is not in the plain layout (escapes, tabs, odd spacing, errors): the
    regular expression path then decides. What it accepts is a subset of what that path accepts, with equal results.

    The series part of a line (everything before the value) is cached with its parsed name and
    labels, like Prometheus' scrape cache: a parser reused for the next body of the same source
    only splits off and converts the values. Cached label dicts are shared between the samples
    that return them: treat them as read-only.
    """

    __slots__ = ("first", "limit", "names", "next", "series")

    def __init__(self, limit: int = 1_000_000) -> None:
        self.limit = limit
        self.series: dict[str, tuple[str, dict[str, str]]] = {}  # text before the value -> name, labels
        self.names: dict[str, str] = {}  # text before "{" -> metric name
        self.first: dict[str, str] = {}  # text before a first label value -> label name
        self.next: dict[str, str] = {}  # text between a value and the next one -> label name

    @staticmethod
    def _learn(cache: dict[str, str], regex: re.Pattern[str], text: str) -> str | None:
        m = regex.fullmatch(text)
        if m is None:
            return None
        cache[text] = m.group(1)
        return m.group(1)

    def _series(self, prefix: str) -> tuple[str, dict[str, str]] | None:
        brace = prefix.find("{")
        if brace >= 0 and prefix[-1] != "}":
            return None
        raw = prefix if brace < 0 else prefix[:brace]
        name = self.names.get(raw) or self._learn(self.names, _RAW_NAME_RE, raw)
        if name is None:
            return None
        labels: dict[str, str] = {}
        if brace >= 0:
            blob = prefix[brace + 1 : -1]
            if "\\" in blob:
                return None
            parts = blob.split('"')  # without escapes, values hold no quotes
            n = len(parts)
            if n == 1:
                if blob.strip(" \t"):
                    return None
            else:
                if not n & 1 or parts[-1].strip(" \t") not in ("", ","):
                    return None
                key = self.first.get(parts[0]) or self._learn(self.first, _FIRST_SEP_RE, parts[0])
                if key is None:
                    return None
                labels[key] = parts[1]
                nxt = self.next
                for i in range(2, n - 1, 2):
                    sep = parts[i]
                    key = nxt.get(sep) or self._learn(nxt, _NEXT_SEP_RE, sep)
                    if key is None:
                        return None
                    labels[key] = parts[i + 1]
                if len(labels) != n >> 1 or "__name__" in labels:
                    return None
        if len(self.series) >= self.limit:
            self.series.clear()
        hit = self.series[prefix] = (name, labels)
        return hit

    def sample(
        self, line: str, cut: int, hit: tuple[str, dict[str, str]]
    ) -> tuple[str, dict[str, str], float, int | None] | None:
        """The value and timestamp of ``line`` split at ``cut`` (after its last "}", else at its
        first space), whose series part parsed as ``hit``; None if not in the plain layout."""
        rest = line[cut:]
        if rest[:1] != " ":
            return None
        space = rest.find(" ", 1)
        ts: int | None = None
        if space < 0:
            v = rest[1:]
        else:
            v = rest[1:space]
            t = rest[space + 1 :]
            digits = t[1:] if t[:1] == "-" else t
            if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
                return None
            ts = int(t)
        if not v or v.strip(_FLOAT_CHARS):
            value = _SPECIAL_VALUES.get(v)
            if value is None:
                return None
        else:
            try:
                value = float(v)
            except ValueError:
                return None
            if value in _INF:
                return None
        return hit[0], hit[1], value, ts


class _State:
    __slots__ = ("families", "typed")

    def __init__(self) -> None:
        self.families: dict[str, MetricFamily] = {}
        self.typed: set[str] = set()  # families with a TYPE line or samples (a later TYPE is an error)


def _family_for(state: _State, name: str) -> MetricFamily:
    """expfmt's setOrCreateCurrentMF: the family a sample name belongs to."""
    fams = state.families
    fam = fams.get(name)
    if fam is not None:
        return fam
    if name.endswith(("_sum", "_count")):
        fam = fams.get(name[: -4 if name.endswith("_sum") else -6])
        if fam is not None and fam.type is MetricType.SUMMARY:
            return fam
    if name.endswith(("_bucket", "_sum", "_count")):
        fam = fams.get(name[: -7 if name.endswith("_bucket") else -4 if name.endswith("_sum") else -6])
        if fam is not None and fam.type is MetricType.HISTOGRAM:
            return fam
    fam = fams[name] = MetricFamily(name)
    return fam


def _comment(state: _State, line: str, lineno: int) -> None:
    body = line.lstrip(" \t")[1:].lstrip(" \t")
    if body.startswith("HELP"):
        kind = "HELP"
    elif body.startswith("TYPE"):
        kind = "TYPE"
    else:
        return  # a plain comment
    rest = body[4:]
    if rest and rest[0] not in " \t":
        return  # e.g. "# HELPER": a plain comment
    rest = rest.lstrip(" \t")
    if not rest:
        return  # "# HELP" alone is a plain comment
    m = re.match(_NAME, rest)
    if m is None or (m.end() < len(rest) and rest[m.end()] not in " \t"):
        raise ParseError(f"invalid metric name in {kind} line", lineno)
    name = m.group(0)
    text = rest[m.end():].lstrip(" \t")
    if not text:
        return  # "# TYPE x" or "# HELP x" without more: a plain comment for expfmt too
    fam = state.families.get(name)
    if fam is None:
        fam = state.families[name] = MetricFamily(name)
    if kind == "HELP":
        if fam.help is not None:
            raise ParseError(f'second HELP line for metric name "{name}"', lineno)
        fam.help = _unescape(text, _HELP_ESCAPES, lineno) if "\\" in text else text
        return
    if name in state.typed:
        raise ParseError(f'second TYPE line for metric name "{name}", or TYPE reported after samples', lineno)
    typ = _TYPES.get(text.lower())
    if typ is None:
        raise ParseError(f'unknown metric type "{text}"', lineno)
    fam.type = typ
    state.typed.add(name)


def parse_text(data: bytes | str) -> list[MetricFamily]:
    """Parse a text-format body into families, in order of first appearance.

    Raises :class:`ParseError` (with the 1-based line) for anything Pushgateway would refuse to
    parse. Families without samples (a lone HELP or TYPE line) are returned too.
    """
    return TextParser().parse(data)


class TextParser:
    """A parser to reuse for successive bodies of one source (a scrape target): it caches the
    series part of each line, so later bodies cost little more than their values.

    Label dicts of samples may be shared between samples of successive bodies: read-only.
    """

    def __init__(self, cache_limit: int = 1_000_000) -> None:
        """``cache_limit``: series kept before the cache starts over (it bounds memory)."""
        self._fast = _FastPath(cache_limit)

    def parse(self, data: bytes | str) -> list[MetricFamily]:
        """As :func:`parse_text`."""
        return _parse(data, self._fast)


def _parse(data: bytes | str, fast: _FastPath) -> list[MetricFamily]:
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError("invalid UTF-8", data.count(b"\n", 0, exc.start) + 1) from None
    else:
        text = data
    if not text:
        return []
    lines = text.split("\n")
    last = lines.pop()
    if last:
        lines.append(last)  # reported below, once the lines before it have been checked
    state = _State()
    families = state.families
    typed = state.typed
    match = _SAMPLE_RE.fullmatch
    fast_sample = fast.sample
    series_get = fast.series.get
    new_series = fast._series
    histogram = MetricType.HISTOGRAM
    summary = MetricType.SUMMARY
    cur_name = ""
    cur_fam: MetricFamily | None = None
    for lineno, line in enumerate(lines, 1):
        # Quickest: a series seen before (this body or an earlier one) with a plain value.
        close = line.rfind("}")
        cut = close + 1 if close >= 0 else line.find(" ")
        hit = None
        if cut > 0:
            prefix = line[:cut]
            hit = series_get(prefix)
            if hit is None and line[0] != "#":
                hit = new_series(prefix)
        value = None
        if hit is not None and line[cut : cut + 1] == " ":
            v = line[cut + 1 :]
            if v and not v.strip(_FLOAT_CHARS):
                try:
                    value = float(v)
                except ValueError:
                    value = None
                if value in _INF:
                    value = None
        if value is not None:
            name, labels = hit  # type: ignore[misc]
            ts = None
        elif hit is not None and (quick := fast_sample(line, cut, hit)) is not None:
            name, labels, value, ts = quick
        else:
            m = match(line)
            if m is None:
                s = line.lstrip(" \t")
                if not s:
                    continue
                if s[0] == "#":
                    _comment(state, line, lineno)
                    cur_name = ""
                    continue
                raise _diagnose(line, lineno)
            name, blob, value_s, ts_s = m.groups()
            labels = _parse_labels(blob, name, lineno) if blob else {}
            value = float(value_s)
            if value in (math.inf, -math.inf) and "n" not in value_s and "N" not in value_s:
                raise ParseError(f"expected float as value, got {value_s!r} (out of range)", lineno)
            ts = None
            if ts_s is not None:
                # int() refuses over 4300 digits with a ValueError: anything over 19 is out of range anyway
                ts = int(ts_s) if len(ts_s) <= 20 else 2**63
                if not -(2**63) <= ts < 2**63:
                    raise ParseError(f"expected integer as timestamp, got {ts_s!r} (out of range)", lineno)
        if name != cur_name:
            cur_fam = _family_for(state, name)
            cur_name = name
            if cur_fam.name not in typed:
                typed.add(cur_fam.name)
        assert cur_fam is not None
        if labels:
            # expfmt treats le (quantile) on any sample of a histogram (summary) as its bucket
            # bound (quantile), which must be a float.
            typ = cur_fam.type
            if typ is histogram and "le" in labels:
                _check_float_label(labels["le"], "le", lineno)
            elif typ is summary and "quantile" in labels:
                _check_float_label(labels["quantile"], "quantile", lineno)
        cur_fam.samples.append(FamilySample(name, labels, value, ts))
    if last.strip(" \t"):
        raise ParseError("unexpected end of input stream", len(lines))
    return list(families.values())


def _check_float_label(value: str, label: str, lineno: int) -> None:
    try:
        parse_go_float(value)
    except ValueError:
        raise ParseError(f"expected float as value for '{label}' label, got {value!r}", lineno) from None
