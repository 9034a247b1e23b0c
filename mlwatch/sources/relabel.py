"""Prometheus ``metric_relabel_configs``: keep, drop, replace, labeldrop, labelkeep.

Rules apply in order to one series' labels (``__name__`` included); a rule that drops the series
ends the walk. Regexes are anchored, ``replacement`` expands ``$1``, ``${1}`` and ``${name}``
as Go's ``Regexp.Expand`` does, and a replace whose result is empty removes the target label.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mlwatch.config.parts import RelabelConfig
from mlwatch.regex import compile_regex

__all__ = ["Relabeler"]

_GROUP_RE = re.compile(r"\$(?:\{(\w+)\}|(\w+))|\$\$")


@dataclass(frozen=True, slots=True)
class _Rule:
    action: str
    source_labels: tuple[str, ...]
    separator: str
    regex: Any  # an RE2 pattern (mlwatch.regex)
    target_label: str | None
    replacement: str


def _expand(template: str, m: Any) -> str:
    def sub(g: re.Match[str]) -> str:
        if g.group(0) == "$$":
            return "$"
        ref = g.group(1) or g.group(2)
        try:
            value = m.group(int(ref)) if ref.isdigit() else m.group(ref)
        except IndexError:
            return ""  # Go expands an unknown group to nothing
        return value or ""

    return _GROUP_RE.sub(sub, template)



class Relabeler:
    """Applies a list of rules; built once per source."""

    def __init__(self, rules: Sequence[RelabelConfig]) -> None:
        self._rules = [
            _Rule(
                r.action,
                tuple(r.source_labels),
                r.separator,
                compile_regex(r.regex, anchored=True, dotall=True),
                r.target_label,
                r.replacement,
            )
            for r in rules
        ]

    def __bool__(self) -> bool:
        return bool(self._rules)

    def apply(self, labels: dict[str, str]) -> dict[str, str] | None:
        """The relabelled labels (a new dict when changed), or None when the series is dropped."""
        for rule in self._rules:
            action = rule.action
            if action in ("keep", "drop", "replace"):
                value = rule.separator.join(labels.get(n, "") for n in rule.source_labels)
                m = rule.regex.match(value)
                if action == "keep":
                    if m is None:
                        return None
                elif action == "drop":
                    if m is not None:
                        return None
                elif m is not None:
                    assert rule.target_label is not None
                    target = _expand(rule.target_label, m)
                    new = _expand(rule.replacement, m)
                    labels = dict(labels)
                    if new:
                        labels[target] = new
                    else:
                        labels.pop(target, None)
            elif action == "labeldrop":
                labels = {k: v for k, v in labels.items() if not rule.regex.match(k)}
            else:  # labelkeep
                labels = {k: v for k, v in labels.items() if rule.regex.match(k)}
        return labels
