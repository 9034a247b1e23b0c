"""Loading: read the YAML with ruamel.yaml to keep node positions, expand ``${VAR}`` in string values,
validate with pydantic, then run the cross-field checks on the raw tree, so one run reports every
problem as ``FILE:LINE: path: message``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    Tag,
    ValidationError,
)
from pydantic.fields import FieldInfo
from ruamel.yaml import YAML
from ruamel.yaml.composer import MaxDepthExceededError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

from mlwatch.config._fields import _ENV_NAME_RE, CONFIG_ENV_VAR, DEFAULT_CONFIG_FILE, _keys_of, _kind
from mlwatch.config.alerting import rule_file_problems
from mlwatch.config.ml import labels_for_problems
from mlwatch.config.schema import Config, check_metric_types, default_config
from mlwatch.errors import ConfigError, ConfigProblem


def _duplicate_source_names(tree: Any, reader: _TreeReader, file: str) -> list[ConfigProblem]:
    sources = tree.get("sources") if isinstance(tree, dict) else None
    if not isinstance(sources, list):
        return []
    seen: dict[str, int] = {}
    problems = []
    for i, source in enumerate(sources):
        name = source.get("name") if isinstance(source, dict) else None
        if not isinstance(name, str):
            continue
        line = reader.lines.line(("sources", i, "name"))
        if name in seen:
            message = f"sources[{i}].name: duplicate source name {name!r} (first at line {seen[name]})"
            problems.append(ConfigProblem(file, line, reader.redact(message, ("sources", i, "name"))))
        else:
            seen[name] = line
    return problems


# ------------------------------------------------------------------ reading YAML with positions

_Path = tuple[str | int, ...]
_MAX_NODES = 200_000  # aliases can make a small file expand into a huge tree
_MAX_DEPTH = 100
_OLD_YAML_RE = re.compile(r"^%YAML[ \t]+(?!1\.2\b)", re.MULTILINE)
_VAR_RE = re.compile(r"\$\$\{|\$\{([^}]*)\}")


class _Lines:
    """Line numbers (1-based) of the keys and values of the raw tree, by path."""

    def __init__(self) -> None:
        self.at: dict[_Path, int] = {}

    def line(self, path: _Path) -> int:
        for end in range(len(path), -1, -1):
            if path[:end] in self.at:
                return self.at[path[:end]]
        return 0


class _TreeReader:
    """Turns ruamel's round-trip tree into plain dicts, lists and scalars, recording positions,
    expanding ``${VAR}`` in string values and collecting problems instead of stopping at the first."""

    def __init__(self, file: str, env: Mapping[str, str]) -> None:
        self.file = file
        self.env = env
        self.lines = _Lines()
        self.problems: list[ConfigProblem] = []
        self.failed_paths: set[_Path] = set()
        self.expanded: dict[_Path, tuple[str, str]] = {}  # path -> (text as written, expanded text)
        self._nodes = 0
        self._open: set[int] = set()

    def redact(self, message: str, *paths: _Path) -> str:
        """``message`` with values expanded from the environment (which may hold secrets) shown as written."""
        # The values at these paths, around them (an error about a list quotes its items) and above them.
        related = [
            (written, value)
            for at, (written, value) in self.expanded.items()
            if value and any(at[: len(p)] == p or p[: len(at)] == at for p in paths)
        ]
        for written, value in sorted(related, key=lambda pair: -len(pair[1])):
            for quote in (json.dumps, repr):
                message = message.replace(quote(value), quote(written))
            message = message.replace(value, written)
        return message

    def problem(self, path: _Path, message: str, line: int | None = None) -> None:
        where = _format_path(path)
        text = f"{where}: {message}" if where else message
        self.problems.append(ConfigProblem(self.file, self.lines.line(path) if line is None else line, text))

    def read(self, node: Any, path: _Path, line: int) -> Any:
        self.lines.at.setdefault(path, line)
        self._nodes += 1
        if self._nodes > _MAX_NODES:
            if self._nodes == _MAX_NODES + 1:
                self.problem(path, f"the document is too large (more than {_MAX_NODES} values after aliases)")
            return None
        if isinstance(node, dict | list) and id(node) in self._open:
            self.problem(path, "an alias refers to a node that contains it")
            return None
        if isinstance(node, dict):
            self._open.add(id(node))
            try:
                return self._mapping(node, path, line)
            finally:
                self._open.discard(id(node))
        if isinstance(node, list):
            self._open.add(id(node))
            try:
                return [self.read(item, (*path, i), _position(node, "item", i, line)) for i, item in enumerate(node)]
            finally:
                self._open.discard(id(node))
        if isinstance(node, str):
            return self._expand(str(node), path)
        if isinstance(node, bool):
            return bool(node)
        if isinstance(node, int):
            return int(node)
        if isinstance(node, float):
            return float(node)
        if node is None or isinstance(node, date | bytes):
            return node  # pydantic reports these as the wrong type where they do not fit
        tag = getattr(getattr(node, "tag", None), "value", None)
        if tag == "tag:yaml.org,2002:str" and isinstance(getattr(node, "value", None), str):
            return self._expand(node.value, path)  # `!!str 5s`
        what = "a set" if isinstance(node, AbstractSet) else f"tagged {tag}" if tag else type(node).__name__
        self.problem(path, f"unsupported YAML value ({what})")
        return None

    def _mapping(self, node: dict[Any, Any], path: _Path, line: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            key_line = _position(node, "key", key, line)
            if not isinstance(key, str) or isinstance(key, bool):
                self.problem(path, f"keys must be strings, got {_describe(key, False)}", key_line)
                continue
            key = str(key)
            nested = isinstance(value, dict | list)
            value_line = key_line if nested else _position(node, "value", key, key_line)
            self.lines.at.setdefault((*path, key), key_line)
            out[key] = self.read(value, (*path, key), value_line)
        return out

    def _expand(self, text: str, path: _Path) -> str:
        if "$" not in text:
            return text

        def substitute(m: re.Match[str]) -> str:
            if m.group(0) == "$${":
                return "${"
            ref = m.group(1)
            name, sep, default = ref.partition(":-")
            if not _ENV_NAME_RE.match(name):
                raise _ExpandError(f"invalid variable reference ${{{ref}}} (expected ${{NAME}} or ${{NAME:-default}})")
            value = self.env.get(name)
            if value is None or (sep and value == ""):
                if sep:
                    return default
                raise _ExpandError(f"environment variable {name} is not set (used as ${{{name}}})")
            return value

        try:
            pieces = _VAR_RE.split(text)
            if any("${" in piece for piece in pieces[::2]):
                raise _ExpandError("unterminated ${ (write $${ for a literal ${)")
            result = _VAR_RE.sub(substitute, text)
        except _ExpandError as exc:
            self.problem(path, str(exc))
            self.failed_paths.add(path)  # pydantic's complaint about the unexpanded text would repeat it
            return text
        if result != text:
            self.expanded[path] = (text, result)
        return result


class _ExpandError(Exception):
    pass


def _position(node: Any, what: str, arg: Any, default: int) -> int:
    """1-based line of ``node.lc.<what>(arg)``; ``default`` where ruamel has none (e.g. keys merged with <<)."""
    try:
        line = getattr(node.lc, what)(arg)[0]
    except (AttributeError, KeyError, TypeError, IndexError):
        return default
    return line + 1 if isinstance(line, int) else default


def _yaml_problem(exc: YAMLError, file: str, text: str = "") -> ConfigProblem:
    if isinstance(exc, ReaderError) and isinstance(exc.character, int) and isinstance(exc.position, int):
        line = text.count("\n", 0, exc.position) + 1 if text else 0
        return ConfigProblem(file, line, f"YAML does not allow the control character U+{exc.character:04X}")
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "invalid YAML"
        if isinstance(exc, MaxDepthExceededError):
            what = f"nested more than {_MAX_DEPTH} levels deep"
        # ruamel quotes both values of a duplicate key; they may be secrets.
        what = what.split(" with value")[0]
        return ConfigProblem(file, (mark.line + 1) if mark else 0, f"YAML syntax error: {what}")
    return ConfigProblem(file, 0, f"YAML error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")


# ------------------------------------------------------------------ pydantic errors -> problems


def _format_path(path: _Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]" if out else json.dumps(part)
    return out


def _describe(value: Any, secret: bool) -> str:
    if secret or isinstance(value, dict | list | set | bytes) or value is None:
        return _kind(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return json.dumps(text)
    return str(value)


@dataclass(slots=True)
class _Where:
    path: _Path  # into the raw tree (union tags removed)
    model: type[BaseModel] | None  # the model that owns the last key
    secret: bool
    union: Mapping[str, type[BaseModel]] | None  # set when the loc ends at a tagged union


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated and not _union_tags(tp):
            tp = get_args(tp)[0]
        elif origin is Union or origin is UnionType:
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _union_tags(tp: Any) -> dict[str, type[BaseModel]]:
    """The members of a tagged union annotation, by tag; empty for anything else."""
    if get_origin(tp) is not Annotated:
        return {}
    inner = get_args(tp)[0]
    if get_origin(inner) is not Union:
        return {}
    tags = {}
    for member in get_args(inner):
        if get_origin(member) is Annotated:
            model, *meta = get_args(member)
            for m in meta:
                if isinstance(m, Tag):
                    tags[m.tag] = model
    return tags


def _field(model: type[BaseModel], key: str) -> FieldInfo | None:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info
    return None


def _resolve(loc: tuple[str | int, ...]) -> _Where:
    tp: Any = Config
    path: list[str | int] = []
    owner: type[BaseModel] | None = None
    secret = False
    after_dict_key = False
    for el in loc:
        if el == "[key]" and after_dict_key:
            break  # pydantic's marker for "the key itself is invalid", not a level of the tree
        after_dict_key = get_origin(_unwrap(tp)) is dict
        tp = _unwrap(tp)
        tags = _union_tags(tp)
        if tags:
            tp = tags.get(str(el))
            continue  # pydantic puts the tag into the loc; the raw tree has no such level
        path.append(el)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(el, str):
            owner = tp
            info = _field(tp, el)
            tp = info.annotation if info else None
            if info and isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("secret"):
                secret = True
        elif get_origin(tp) in (list, tuple):
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            tp = None
    tp = _unwrap(tp)
    tags = _union_tags(tp)
    return _Where(tuple(path), owner, secret, tags or None)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_TYPE_WORDS = {
    "model_type": "a mapping", "model_attributes_type": "a mapping", "dict_type": "a mapping",
    "list_type": "a list", "string_type": "a string", "int_type": "an integer", "int_parsing": "an integer",
    "int_from_float": "a whole number", "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false",
}  # fmt: skip


def _message(error: Mapping[str, Any], where: _Where) -> tuple[_Path, str]:
    """The path to report an error at and its message, in the file's terms (never a secret value)."""
    kind = error["type"]
    value = error.get("input")
    path = where.path
    ctx = error.get("ctx") or {}
    if not path and kind in ("extra_forbidden", "missing"):
        return path, str(error["msg"])  # cannot happen with the loc pydantic gives; never crash on it
    if kind == "extra_forbidden":
        return path, "unknown key" + _did_you_mean(str(path[-1]), _keys_of(where.model))
    if kind == "missing":
        return path[:-1], f"missing required key {path[-1]!r}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = sorted(where.union or {})
        expected = ", ".join(tags)
        if not isinstance(value, Mapping):
            return path, f"expected a mapping, got {_kind(value)}"
        if kind == "union_tag_not_found" or value.get("type") is None:
            return path, f"missing required key 'type' (one of: {expected})"
        tag = str(ctx.get("tag", value.get("type")))
        return (*path, "type"), f"unknown type {tag!r}{_did_you_mean(tag, tags)}; expected one of: {expected}"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        hint = _did_you_mean(str(value), choices) if isinstance(value, str) and not where.secret else ""
        return path, f"expected one of {', '.join(choices)}, got {_describe(value, where.secret)}{hint}"
    if kind == "too_short" and ctx.get("min_length") == 1:
        return path, "must not be empty"
    if kind in ("value_error", "assertion_error"):
        return path, str(ctx.get("error", error["msg"]))
    if kind in _TYPE_WORDS:
        return path, f"expected {_TYPE_WORDS[kind]}, got {_describe(value, where.secret)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        words = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
        bound = next(iter(ctx.values()), "?")
        return path, f"must be {words[kind]} {bound}, got {_describe(value, where.secret)}"
    return path, str(error["msg"])


def _validation_problems(exc: ValidationError, reader: _TreeReader, file: str) -> list[ConfigProblem]:
    problems = []
    for error in exc.errors(include_url=False):
        where = _resolve(tuple(error["loc"]))
        if any(where.path[: len(p)] == p for p in reader.failed_paths):
            continue  # already reported (e.g. an unset ${VAR})
        path, message = _message(error, where)
        message = reader.redact(message, where.path, path)
        text = f"{_format_path(path)}: {message}" if path else message
        problems.append(ConfigProblem(file, reader.lines.line(path), text))
    return problems


# ------------------------------------------------------------------ public loading API


def _finish(problems: list[ConfigProblem], filename: str) -> list[ConfigProblem]:
    """Unique problems: the config file's by line, then each rule file's by line (files in the
    order ``rule_files`` names them)."""
    unique = list(dict.fromkeys(problems))
    files = list(dict.fromkeys(p.file for p in unique if p.file != filename))
    return sorted(unique, key=lambda p: (-1 if p.file == filename else files.index(p.file), p.line))


def parse_config(text: str, filename: str = "<config>", env: Mapping[str, str] = os.environ) -> Config:
    """Validate config text; raise ConfigError listing every problem (``filename`` names them).

    An empty document is the default config. Relative TLS file paths are resolved against the
    directory of ``filename`` (the working directory for a pseudo-name such as ``<config>``).
    """
    old_yaml = _OLD_YAML_RE.search(text)
    if old_yaml:  # 1.1 reads `yes` as true and `010` as 8; ruamel would also warn rather than fail
        line = text.count("\n", 0, old_yaml.start()) + 1
        raise ConfigError([ConfigProblem(filename, line, "only YAML 1.2 is supported (remove the %YAML directive)")])
    yaml = YAML(typ="rt", pure=True)
    yaml.max_depth = _MAX_DEPTH
    yaml.composer.warn_double_anchors = False  # redefining an anchor is valid YAML: the later one wins
    try:
        document = yaml.load(text)
    except YAMLError as exc:
        raise ConfigError([_yaml_problem(exc, filename, text)]) from None
    except RecursionError:
        raise ConfigError([ConfigProblem(filename, 0, "YAML nesting is too deep")]) from None
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        # ruamel fails this way on some valid but odd YAML, e.g. a mapping used as a key (`? {a: 1}`).
        message = f"YAML structure mlwatch cannot read ({type(exc).__name__}: {exc})"
        raise ConfigError([ConfigProblem(filename, 0, message)]) from None
    if document is None:
        return default_config()
    reader = _TreeReader(filename, env)
    try:
        tree = reader.read(document, (), _node_line(document))
    except RecursionError:
        raise ConfigError([ConfigProblem(filename, 0, "YAML nesting is too deep")]) from None
    if not isinstance(tree, dict):
        message = f"the top level must be a mapping of keys such as storage, server and sources, got {_kind(tree)}"
        raise ConfigError([ConfigProblem(filename, _node_line(document), message)])
    problems = list(reader.problems)
    problems += _duplicate_source_names(tree, reader, filename)
    base_dir = Path.cwd() if filename.startswith("<") else Path(filename).resolve().parent
    # Rule files' problems are reported below as their own RULEFILE:LINE lines, not folded into one
    # line at rule_files (which is what model validation does without this flag).
    context = {"env": env, "base_dir": base_dir, "from_file": True, "rule_files_by_loader": True}
    config: Config | None = None
    try:
        config = Config.model_validate(tree, context=context)
    except ValidationError as exc:
        problems += _validation_problems(exc, reader, filename)
    except RecursionError:
        problems.append(ConfigProblem(filename, 0, "the config is nested too deeply"))
    if config is not None:
        decls = [(d.name, d.type, reader.lines.line(d.loc)) for d in config.metric_declarations()]
        problems += check_metric_types(decls, filename)
        for i, message in labels_for_problems(config.sources):
            line = reader.lines.line(("sources", i, "labels_for", "source"))
            problems.append(ConfigProblem(filename, line, f"sources[{i}].{message}"))
    patterns = tree.get("rule_files")
    if isinstance(patterns, list) and all(isinstance(p, str) and p.strip() for p in patterns):
        # (otherwise validation reports rule_files itself; a blank pattern would glob the directory)
        # rule_file_problems names files relative to the config's directory; name them as the config
        # file was named (rules/x.yml next to conf/mlwatch.yaml is conf/rules/x.yml), so each can be opened.
        folder = "" if filename.startswith("<") else os.path.dirname(filename)
        problems += [
            ConfigProblem(os.path.join(folder, p.file), p.line, p.message)
            for p in rule_file_problems(patterns, base_dir)
        ]
    if problems or config is None:
        raise ConfigError(_finish(problems, filename))
    return config


def _node_line(node: Any) -> int:
    line = getattr(getattr(node, "lc", None), "line", None)
    return line + 1 if isinstance(line, int) else 1


def config_path(path: str | os.PathLike[str] | None, env: Mapping[str, str] = os.environ) -> Path | None:
    """The file :func:`load_config` reads: ``path``, else ``$MLWATCH_CONFIG``, else ./mlwatch.yaml if it
    exists; None means the built-in default."""
    if path is not None:
        return Path(path)
    if env.get(CONFIG_ENV_VAR):
        return Path(env[CONFIG_ENV_VAR])
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.exists() else None


MAX_FILE_BYTES = 2 * 1024 * 1024
"""Config and rule files larger than this are refused: the YAML reader needs seconds per MiB (a real config
is a few KiB), so a runaway generated file would otherwise stall start-up and reloads for minutes."""


def read_yaml_text(path: str | os.PathLike[str], what: str = "config file") -> str:
    """The text of a config or rule file, read with a size bound; ConfigError naming the problem."""
    name = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError([ConfigProblem(name, 0, f"cannot read the {what}: {exc.strerror or exc}")]) from None
    if len(data) > MAX_FILE_BYTES:
        message = f"the {what} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; is it the right file?"
        raise ConfigError([ConfigProblem(name, 0, message)])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([ConfigProblem(name, line, f"the {what} is not valid UTF-8")]) from None


def plain_tree(node: Any, *, max_nodes: int = _MAX_NODES) -> Any:
    """ruamel's tree as plain dicts, lists and scalars, refusing (ValueError) alias bombs and cycles: an
    alias is a reference, so a 1 KiB file can stand for 10**12 values."""
    count = 0
    open_nodes: set[int] = set()

    def walk(n: Any) -> Any:
        nonlocal count
        count += 1
        if count > max_nodes:
            raise ValueError(f"the document is too large (more than {max_nodes} values after aliases)")
        if isinstance(n, dict | list):
            if id(n) in open_nodes:
                raise ValueError("an alias refers to a node that contains it")
            open_nodes.add(id(n))
            try:
                if isinstance(n, dict):
                    return {str(k): walk(v) for k, v in n.items()}
                return [walk(v) for v in n]
            finally:
                open_nodes.discard(id(n))
        if isinstance(n, str):
            return str(n)
        if isinstance(n, bool):
            return bool(n)
        if isinstance(n, int):
            return int(n)
        if isinstance(n, float):
            return float(n)
        return n

    return walk(node)


def load_config(path: str | os.PathLike[str] | None, env: Mapping[str, str] = os.environ) -> Config:
    """Load and validate the config that :func:`config_path` picks; raise ConfigError with every problem."""
    chosen = config_path(path, env)
    if chosen is None:
        return default_config()
    return parse_config(read_yaml_text(chosen), str(chosen), env)


def check_config(path: str | os.PathLike[str] | None, env: Mapping[str, str] = os.environ) -> list[ConfigProblem]:
    """Every problem in the config :func:`config_path` picks, in line order; empty when it is valid."""
    try:
        load_config(path, env)
    except ConfigError as exc:
        return exc.problems
    return []
