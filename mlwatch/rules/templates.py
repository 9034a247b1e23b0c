"""The supported subset of Prometheus' Go templates, parsed once and rendered without executing code.

Supported (the README lists the same):

- text with actions ``{{ ... }}``, trim markers ``{{-`` and ``-}}``, comments ``{{/* ... */}}``;
- values: ``$labels`` / ``.Labels`` (and ``$labels.name``), ``$value`` / ``.Value``, ``$externalLabels`` /
  ``.ExternalLabels``, ``.`` (the current value inside ``with``), string, number and boolean literals,
  parenthesised pipelines;
- pipelines ``a | f | g x`` (the piped value becomes the last argument, as in Go);
- ``if`` / ``else if`` / ``else`` / ``end`` and ``with`` / ``else`` / ``end``;
- functions: ``humanize``, ``humanize1024``, ``humanizePercentage``, ``humanizeDuration``, ``printf``,
  ``toUpper``, ``toLower``, ``title``, ``eq ne lt le gt ge``, ``and or not``, ``len``, ``index``.

Anything else (``range``, ``define``, ``template``, ``query``, variables assignments, unknown
functions ...) is a :class:`TemplateError` at parse time, which ``check-config`` reports with the
file and line. Rendering never evaluates Python: it walks the parsed tree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlwatch.errors import MlwatchError


class TemplateError(MlwatchError):
    """A template outside the supported subset, or one that fails while rendering."""


# ------------------------------------------------------------------ formatting helpers (Go semantics)


def go_float(v: float) -> str:
    """A float64 as Go's ``%v`` prints it (shortest representation, exponent from 1e21 and below 1e-4)."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return "0" if math.copysign(1.0, v) > 0 else "-0"
    r = repr(v)
    if "e" in r and 1e16 <= abs(v) < 1e21:  # Python switches to an exponent at 1e16, Go only at 1e21
        return format(v, "f").rstrip("0").rstrip(".")
    return r.removesuffix(".0")


def _g4(v: float) -> str:
    """Go's ``%.4g``."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    s = format(v, ".4g")
    if "e" in s:
        mant, _, e = s.partition("e")
        sign = "-" if e.startswith("-") else "+"
        s = f"{mant}e{sign}{e.lstrip('+-').zfill(2)}"
    return s


def humanize(v: float) -> str:
    if v == 0 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    if abs(v) >= 1:
        prefix = ""
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(v) < 1000:
                break
            prefix = p
            v /= 1000
        return _g4(v) + prefix
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix = p
        v *= 1000
    return _g4(v) + prefix


def humanize1024(v: float) -> str:
    if abs(v) <= 1 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(v) < 1024:
            break
        prefix = p
        v /= 1024
    return _g4(v) + prefix


def humanize_percentage(v: float) -> str:
    return _g4(v * 100) + "%"


def humanize_duration(v: float) -> str:
    if math.isnan(v) or math.isinf(v):
        return _g4(v)
    if v == 0:
        return "0s"
    if abs(v) >= 1:
        sign = "-" if v < 0 else ""
        v = abs(v)
        d = int(v)
        secs, mins, hours, days = d % 60, (d // 60) % 60, (d // 3600) % 24, d // 86400
        if days:
            return f"{sign}{days}d {hours}h {mins}m {secs}s"
        if hours:
            return f"{sign}{hours}h {mins}m {secs}s"
        if mins:
            return f"{sign}{mins}m {secs}s"
        return f"{sign}{_g4(v)}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix = p
        v *= 1000
    return f"{_g4(v)}{prefix}s"


def _to_float(x: Any) -> float:
    if isinstance(x, bool):
        raise TemplateError(f"expected a number, got {x!r}")
    if isinstance(x, int | float):
        return float(x)
    if isinstance(x, str):
        try:
            return float(x)
        except ValueError:
            raise TemplateError(f"cannot convert {x!r} to a number") from None
    raise TemplateError(f"expected a number, got {type(x).__name__}")


def to_text(x: Any) -> str:
    """A value as Go's template engine prints it."""
    if x is None:
        return "<no value>"
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, float):
        return go_float(x)
    if isinstance(x, Mapping):
        return "map[" + " ".join(f"{k}:{to_text(v)}" for k, v in sorted(x.items())) + "]"
    return str(x)


_VERB_RE = re.compile(r"%([-+ #0]*)(\d+|\*)?(?:\.(\d+))?([a-zA-Z%])")


def printf(fmt: Any, *args: Any) -> str:
    """Go's ``fmt.Sprintf`` for the common verbs: %s %v %q %d %f %e %g %x %t %%."""
    if not isinstance(fmt, str):
        raise TemplateError("printf: the format must be a string")
    out: list[str] = []
    pos = 0
    i = 0
    for m in _VERB_RE.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, width, prec, verb = m.group(1), m.group(2) or "", m.group(3), m.group(4)
        if verb == "%":
            out.append("%")
            continue
        if i >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        if any(n.isdigit() and (len(n) > 6 or int(n) > MAX_PRINTF_WIDTH) for n in (width, prec or "")):
            raise TemplateError(f"printf: width or precision in {m.group(0)[:30]!r} is over {MAX_PRINTF_WIDTH}")
        arg = args[i]
        i += 1
        spec = flags + width + (f".{prec}" if prec is not None else "")
        try:
            if verb in "sv":
                text = to_text(arg)
                out.append(format(text, ("<" if "-" in flags else ">") + width) if width else text)
            elif verb == "q":
                out.append('"' + to_text(arg).replace("\\", "\\\\").replace('"', '\\"') + '"')
            elif verb == "t":
                out.append(to_text(bool(arg)))
            elif verb == "d":
                n = arg if isinstance(arg, int) and not isinstance(arg, bool) else None
                out.append(f"%{spec}d" % n if n is not None else f"%!d({type(arg).__name__}={to_text(arg)})")
            elif verb in "feEgGx":
                val = _to_float(arg) if verb != "x" or not isinstance(arg, int) else arg
                out.append(f"%{spec}{verb}" % val)
            else:
                out.append(f"%!{verb}({to_text(arg)})")
        except (TypeError, ValueError) as exc:
            raise TemplateError(f"printf: {exc}") from None
    out.append(fmt[pos:])
    if i < len(args):
        out.append("%!(EXTRA " + ", ".join(to_text(a) for a in args[i:]) + ")")
    return "".join(out)


def _truth(x: Any) -> bool:
    if x is None:
        return False
    if isinstance(x, bool):
        return x
    if isinstance(x, int | float):
        return x != 0
    if isinstance(x, str | Mapping | list | tuple):
        return len(x) > 0
    return True


def _cmp(op: Callable[[Any, Any], bool]) -> Callable[..., bool]:
    def f(a: Any, b: Any) -> bool:
        if isinstance(a, int | float) and isinstance(b, int | float):
            return op(float(a), float(b))
        if type(a) is not type(b):
            raise TemplateError(f"incompatible types for comparison: {to_text(a)} and {to_text(b)}")
        return op(a, b)

    return f


def _eq(a: Any, *bs: Any) -> bool:
    return any(_cmp(lambda x, y: x == y)(a, b) for b in bs)


def _index(x: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(x, Mapping):
            x = x.get(k, "")
        elif isinstance(x, list | tuple | str) and isinstance(k, int):
            x = x[k]
        else:
            raise TemplateError(f"index: cannot index {to_text(x)} with {to_text(k)}")
    return x


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "humanize": lambda v: humanize(_to_float(v)),
    "humanize1024": lambda v: humanize1024(_to_float(v)),
    "humanizePercentage": lambda v: humanize_percentage(_to_float(v)),
    "humanizeDuration": lambda v: humanize_duration(_to_float(v)),
    "printf": printf,
    "toUpper": lambda s: to_text(s).upper(),
    "toLower": lambda s: to_text(s).lower(),
    "title": lambda s: to_text(s).title(),
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _cmp(lambda a, b: a < b),
    "le": _cmp(lambda a, b: a <= b),
    "gt": _cmp(lambda a, b: a > b),
    "ge": _cmp(lambda a, b: a >= b),
    "not": lambda x: not _truth(x),
    "len": lambda x: len(x),
    "index": _index,
}
# `and` / `or` return one of their arguments (Go semantics) and need no laziness here.
FUNCTIONS["and"] = lambda *xs: next((x for x in xs if not _truth(x)), xs[-1])
FUNCTIONS["or"] = lambda *xs: next((x for x in xs if _truth(x)), xs[-1])

# ------------------------------------------------------------------ the tree


@dataclass(frozen=True, slots=True)
class _Field:
    """``$labels.x``, ``.Labels.x``, ``.`` , ``$value`` ...: a root and a chain of keys."""

    root: str  # "dot", "labels", "value", "externalLabels"
    keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Lit:
    value: Any


@dataclass(frozen=True, slots=True)
class _Cmd:
    func: str | None  # None: a single operand
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class _Pipe:
    cmds: tuple[_Cmd, ...]


@dataclass(slots=True)
class _If:
    kind: str  # "if" or "with"
    cond: _Pipe
    then: list[Any] = field(default_factory=list)
    orelse: list[Any] = field(default_factory=list)


MAX_NESTING = 100  # of if/with blocks and of parentheses: deeper templates are refused, not recursed into
MAX_PRINTF_WIDTH = 1000  # printf's width and precision: a label value used as the format cannot ask for gigabytes
_TOKEN_RE = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\\n]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<num>[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?))
    | (?P<var>\$[A-Za-z_0-9]*(?:\.[A-Za-z_][A-Za-z_0-9]*)*)
    | (?P<field>\.(?:[A-Za-z_][A-Za-z_0-9]*(?:\.[A-Za-z_][A-Za-z_0-9]*)*)?)
    | (?P<ident>[A-Za-z_][A-Za-z_0-9]*)
    | (?P<punct>[|()])
    | (?P<bad>\S+)
    )""",
    re.VERBOSE,
)
_VARS = {"$labels": "labels", "$value": "value", "$externalLabels": "externalLabels", "$": "dot"}
_FIELDS = {"Labels": "labels", "Value": "value", "ExternalLabels": "externalLabels"}
_KEYWORDS = {"if", "else", "end", "with"}
_UNSUPPORTED = {"range", "define", "template", "block", "break", "continue", "nil"}


def _unquote(s: str) -> str:
    out = []
    i = 1
    esc = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'"}
    while i < len(s) - 1:
        c = s[i]
        if c == "\\":
            nxt = s[i + 1]
            if nxt not in esc:
                raise TemplateError(f"unsupported escape \\{nxt} in string {s}")
            out.append(esc[nxt])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


class _Parser:
    def __init__(self, text: str, line: int) -> None:
        self.line = line
        self.toks: list[tuple[str, str]] = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            m = _TOKEN_RE.match(text, pos)
            if m is None or m.end() == pos:
                break
            pos = m.end()
            kind = m.lastgroup or "bad"
            self.toks.append((kind, m.group(kind)))
        self.i = 0
        self.depth = 0

    def err(self, msg: str) -> TemplateError:
        return TemplateError(f"line {self.line}: {msg}")

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def pipeline(self) -> _Pipe:
        cmds = [self.command()]
        while (t := self.peek()) is not None and t == ("punct", "|"):
            self.i += 1
            cmd = self.command()
            if cmd.func is None:
                raise self.err("a pipeline stage must be a function, e.g. `| humanize`")
            cmds.append(cmd)
        if cmds[0].func is None and len(cmds[0].args) != 1:
            raise self.err("unexpected operand")
        return _Pipe(tuple(cmds))

    def command(self) -> _Cmd:
        t = self.peek()
        if t is None:
            raise self.err("missing value")
        if t[0] == "ident" and t[1] not in ("true", "false"):
            name = t[1]
            if name in _UNSUPPORTED or name in _KEYWORDS:
                raise self.err(f"{name!r} is not supported in templates")
            if name == "query":
                raise self.err("'query' is not supported in templates (templates cannot run queries)")
            if name not in FUNCTIONS:
                raise self.err(f"function {name!r} is not supported (supported: {', '.join(sorted(FUNCTIONS))})")
            self.i += 1
            args = []
            while (t := self.peek()) is not None and t not in (("punct", "|"), ("punct", ")")):
                args.append(self.operand())
            return _Cmd(name, tuple(args))
        op = self.operand()
        t = self.peek()
        if t is not None and t not in (("punct", "|"), ("punct", ")")):
            raise self.err(f"unexpected {t[1]!r} after a value (only functions take arguments)")
        return _Cmd(None, (op,))

    def operand(self) -> Any:
        t = self.peek()
        if t is None:
            raise self.err("missing value")
        kind, text = t
        self.i += 1
        if kind == "str":
            return _Lit(_unquote(text))
        if kind == "raw":
            return _Lit(text[1:-1])
        if kind == "num":
            try:
                return _Lit(float(text) if any(c in text for c in ".eE") else int(text))
            except ValueError:  # an integer beyond Python's digit limit for conversions
                raise self.err(f"number {text[:20]}... is too long") from None
        if kind == "ident" and text in ("true", "false"):
            return _Lit(text == "true")
        if kind == "var":
            head, *keys = text.split(".")
            if head not in _VARS:
                raise self.err(f"variable {head} is not supported (use $labels, $value or $externalLabels)")
            root = _VARS[head]
            if root == "dot" and keys:  # `$.Labels.x`
                if keys[0] not in _FIELDS:
                    raise self.err(f"field .{keys[0]} is not supported (use .Labels, .Value or .ExternalLabels)")
                root, keys = _FIELDS[keys[0]], keys[1:]
            if root == "value" and keys:
                raise self.err("$value has no fields")
            return _Field(root, tuple(keys))
        if kind == "field":
            keys = [k for k in text.split(".") if k]
            if not keys:
                return _Field("dot")
            return _Field("dot", tuple(keys))
        if kind == "punct" and text == "(":
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise self.err(f"parentheses nested more than {MAX_NESTING} deep")
            pipe = self.pipeline()
            if self.peek() != ("punct", ")"):
                raise self.err("missing ')'")
            self.i += 1
            self.depth -= 1
            return pipe
        if kind == "ident":
            raise self.err(f"function {text!r} cannot be used as a value here; wrap it in parentheses")
        raise self.err(f"unexpected {text!r}")


@dataclass(frozen=True)
class Template:
    """A parsed template; :meth:`render` fills it in."""

    source: str
    nodes: tuple[Any, ...]

    def render(
        self, labels: Mapping[str, str], value: float = math.nan, external_labels: Mapping[str, str] | None = None
    ) -> str:
        data = {"labels": dict(labels), "value": value, "externalLabels": dict(external_labels or {})}
        root = {"Labels": data["labels"], "Value": value, "ExternalLabels": data["externalLabels"]}
        out: list[str] = []
        _render(self.nodes, data, root, out)
        return "".join(out)


@dataclass(frozen=True, slots=True)
class _Action:
    start: int  # of ``{{``
    end: int  # just past ``}}``
    line: int
    body: str  # between the delimiters, without the trim markers
    trim_left: bool  # ``{{-``
    trim_right: bool  # ``-}}``


def _actions(text: str) -> Iterator[_Action]:
    """The ``{{ ... }}`` actions of ``text`` in order: each ends at the first ``}}`` after its ``{{``
    (found with str.find, so hostile text costs linear time, not a regex's quadratic retries)."""
    pos = 0
    line, counted = 1, 0
    while (start := text.find("{{", pos)) != -1:
        close = text.find("}}", start + 2)
        if close == -1:
            return  # parse_template reports the unclosed action
        line += text.count("\n", counted, start)
        counted = start
        body = text[start + 2 : close]
        trim_left = len(body) >= 2 and body[0] == "-" and body[1].isspace()
        if trim_left:
            body = body[2:]
        trim_right = len(body) >= 2 and body[-1] == "-" and body[-2].isspace()
        if trim_right:
            body = body[:-2]
        yield _Action(start, close + 2, line, body, trim_left, trim_right)
        pos = close + 2


def parse_template(text: str) -> Template:
    """Parse ``text``; a TemplateError names the line (within the text) and the construct."""
    nodes: list[Any] = []
    stack: list[tuple[_If, list[Any]]] = []
    current = nodes
    pos = 0
    trim_next = False
    for action in _actions(text):
        literal = text[pos : action.start]
        if trim_next:
            literal = literal.lstrip()
        if action.trim_left:
            literal = literal.rstrip()
        if literal:
            current.append(literal)
        pos = action.end
        trim_next = action.trim_right
        line = action.line
        body = action.body.strip()
        if body.startswith("/*"):
            if not body.endswith("*/"):
                raise TemplateError(f"line {line}: unclosed comment")
            continue
        p = _Parser(body, line)
        first = p.peek()
        if first is None:
            raise TemplateError(f"line {line}: empty action {{{{ }}}}")
        if any(k == "bad" for k, _ in p.toks):
            bad = next(t for k, t in p.toks if k == "bad")
            what = "variable assignment" if ":=" in bad or bad == "=" else repr(bad)
            raise TemplateError(f"line {line}: {what} is not supported in templates")
        word = first[1] if first[0] == "ident" else None
        if word in ("if", "with"):
            if len(stack) >= MAX_NESTING:
                raise TemplateError(f"line {line}: {{{{{word}}}}} blocks nested more than {MAX_NESTING} deep")
            p.i += 1
            node = _If(word, p.pipeline())
            current.append(node)
            stack.append((node, current))
            current = node.then
        elif word == "else":
            if not stack:
                raise TemplateError(f"line {line}: {{{{else}}}} without {{{{if}}}} or {{{{with}}}}")
            node, parent = stack[-1]
            if current is node.orelse:
                raise TemplateError(f"line {line}: a second {{{{else}}}}")
            p.i += 1
            nxt = p.peek()
            if nxt is not None and nxt[0] == "ident" and nxt[1] in ("if", "with"):
                p.i += 1
                inner = _If(nxt[1], p.pipeline())
                node.orelse.append(inner)
                # `else if` shares the outer `end`: replace the frame by the inner block.
                stack[-1] = (inner, parent)
                current = inner.then
            else:
                current = node.orelse
        elif word == "end":
            if not stack:
                raise TemplateError(f"line {line}: {{{{end}}}} without {{{{if}}}} or {{{{with}}}}")
            _node, parent = stack.pop()
            current = parent
            p.i += 1
        else:
            current.append(p.pipeline())
        if p.peek() is not None:
            raise TemplateError(f"line {line}: unexpected {p.peek()[1]!r}")  # type: ignore[index]
    rest = text[pos:]
    if trim_next:
        rest = rest.lstrip()
    if "{{" in rest:
        line = text.count("\n", 0, pos + rest.index("{{")) + 1
        raise TemplateError(f"line {line}: unclosed action (missing }}}})")
    if rest:
        current.append(rest)
    if stack:
        raise TemplateError(f"unexpected end of template: missing {{{{end}}}} for {{{{{stack[-1][0].kind}}}}}")
    return Template(text, tuple(nodes))


def check_template(text: str) -> str | None:
    """None when ``text`` is a valid template of the subset, else the problem."""
    try:
        parse_template(text)
    except TemplateError as exc:
        return str(exc)
    return None


def render_template(
    text: str, labels: Mapping[str, str], value: float = math.nan, external_labels: Mapping[str, str] | None = None
) -> str:
    return parse_template(text).render(labels, value, external_labels)


# ------------------------------------------------------------------ rendering


def _render(nodes: Any, data: dict[str, Any], dot: Any, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _If):
            val = _pipe(node.cond, data, dot)
            if _truth(val):
                _render(node.then, data, val if node.kind == "with" else dot, out)
            else:
                _render(node.orelse, data, dot, out)
        else:
            out.append(to_text(_pipe(node, data, dot)))


def _pipe(pipe: _Pipe, data: dict[str, Any], dot: Any) -> Any:
    result: Any = None
    for n, cmd in enumerate(pipe.cmds):
        args = [_eval(a, data, dot) for a in cmd.args]
        if n > 0:
            args.append(result)
        if cmd.func is None:
            result = args[0]
            continue
        try:
            result = FUNCTIONS[cmd.func](*args)
        except TemplateError:
            raise
        except (TypeError, ValueError, IndexError, KeyError) as exc:
            raise TemplateError(f"error calling {cmd.func}: {exc}") from None
    return result


def _eval(node: Any, data: dict[str, Any], dot: Any) -> Any:
    if isinstance(node, _Lit):
        return node.value
    if isinstance(node, _Pipe):
        return _pipe(node, data, dot)
    assert isinstance(node, _Field)
    keys = list(node.keys)
    if node.root == "dot":
        cur = dot
        if keys and isinstance(dot, Mapping) and "Labels" in dot and keys[0] in _FIELDS:
            cur = data[_FIELDS[keys.pop(0)]]
    else:
        cur = data[node.root]
    for k in keys:
        if not isinstance(cur, Mapping):
            raise TemplateError(f"cannot read field {k!r} of {to_text(cur)}")
        cur = cur.get(k, "")  # a missing label renders empty, as Prometheus' map lookup does
    return cur
