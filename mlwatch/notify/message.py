"""What a notification says: the Alertmanager webhook payload (version 4) plus mlwatch's rendered
subject, plain-text and HTML bodies that explain each alert (value, condition, sample count where
known, since when, how to silence it). Channels send these; none composes its own text.

The sample count (``extra["samples"]``, see :mod:`mlwatch.rules.samples`) is in the texts, in a
``samples`` field of each webhook alert (a number; the exec JSON is the same payload) and, as the
``samples`` annotation the rule manager adds, wherever annotations go (webhook, Alertmanager)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlwatch.notify.silences import rfc3339, silence_command
from mlwatch.rules.samples import format_count
from mlwatch.rules.templates import TemplateError, go_float, parse_template

ZERO_TIME = "0001-01-01T00:00:00Z"


@dataclass(slots=True)
class RoutedAlert:
    """An alert as the router holds it (times in Unix seconds; ``ends_at`` None while firing)."""

    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    ends_at: float | None = None
    value: float = float("nan")
    condition: str = ""
    generator_url: str = ""
    updated_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def firing(self) -> bool:
        return self.ends_at is None

    @property
    def samples(self) -> str:
        """The sample count as shown ("" when unknown)."""
        n = self.extra.get("samples")
        return "" if n is None else format_count(float(n))

    def webhook(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "status": "firing" if self.firing else "resolved",
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": rfc3339(self.starts_at),
            "endsAt": ZERO_TIME if self.ends_at is None else rfc3339(self.ends_at),
            "generatorURL": self.generator_url,
            "fingerprint": self.fingerprint,
            "value": go_float(self.value),
            "condition": self.condition,
        }
        n = self.extra.get("samples")
        if n is not None:  # an extra field, as value and condition are; receivers ignore unknown keys
            item["samples"] = int(n) if float(n).is_integer() else float(n)
        return item


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = dict(maps[0])
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def build_payload(
    *,
    key: str,
    receiver: str,
    group_key: str,
    group_labels: Mapping[str, str],
    firing: Sequence[RoutedAlert],
    resolved: Sequence[RoutedAlert],
    external_url: str,
    templates: Mapping[str, str | None] | None = None,
    external_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The webhook v4 payload with an ``mlwatch`` section: idempotency key, rendered texts, silence hint."""
    alerts = [*firing, *resolved]
    common_labels = _common([a.labels for a in alerts])
    payload: dict[str, Any] = {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved",
        "receiver": receiver,
        "groupLabels": dict(group_labels),
        "commonLabels": common_labels,
        "commonAnnotations": _common([a.annotations for a in alerts]),
        "externalURL": external_url,
        "alerts": [a.webhook() for a in alerts],
    }
    subject, text, html_body = render_texts(payload, firing, resolved, templates or {}, external_labels or {})
    payload["mlwatch"] = {
        "idempotencyKey": key,
        "subject": subject,
        "text": text,
        "html": html_body,
        "silence": silence_command(
            common_labels or (alerts[0].labels if alerts else {}),
            keys=[k for k in ("alertname", *group_labels) if k in common_labels],
        ),
    }
    return payload


def _label_text(labels: Mapping[str, str], skip: Sequence[str] = ("alertname",)) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in skip)


def render_texts(
    payload: Mapping[str, Any],
    firing: Sequence[RoutedAlert],
    resolved: Sequence[RoutedAlert],
    templates: Mapping[str, str | None],
    external_labels: Mapping[str, str],
) -> tuple[str, str, str]:
    """Subject, plain text and HTML of a notification (the notifier's templates where given)."""
    common = payload["commonLabels"]
    name = common.get("alertname") or ", ".join(sorted({a.labels.get("alertname", "") for a in [*firing, *resolved]}))
    status = f"FIRING:{len(firing)}" if firing else "RESOLVED"
    scope = _label_text({k: v for k, v in payload["groupLabels"].items()})
    subject = f"[{status}] {name}" + (f" ({scope})" if scope else "")
    lines: list[str] = []
    rows: list[str] = []
    for title, group in (("Firing", firing), ("Resolved", resolved)):
        if not group:
            continue
        lines.append(f"{title}:")
        rows.append(
            f"<h3>{title}</h3><table border='1' cellpadding='4' cellspacing='0'>"
            "<tr><th>alert</th><th>labels</th><th>value</th><th>condition</th><th>samples</th><th>since</th>"
            "<th>summary</th></tr>"
        )
        for a in group:
            summary = a.annotations.get("summary") or a.annotations.get("description", "")
            since = rfc3339(a.starts_at) + ("" if a.firing or a.ends_at is None else f" until {rfc3339(a.ends_at)}")
            lines.append(f"- {a.labels.get('alertname', '')} {{{_label_text(a.labels)}}}")
            lines.append(f"  value: {go_float(a.value)}")
            if a.condition:
                lines.append(f"  condition: {a.condition}")
            if a.samples:
                lines.append(f"  samples: {a.samples}")
            lines.append(f"  since: {since}")
            if summary:
                lines.append(f"  summary: {summary}")
            for k, v in sorted(a.annotations.items()):
                if k != "summary" and not (k == "samples" and v == a.samples):  # shown above
                    lines.append(f"  {k}: {v}")
            cells = [
                a.labels.get("alertname", ""),
                _label_text(a.labels),
                go_float(a.value),
                a.condition,
                a.samples,
                since,
                summary,
            ]
            rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
        rows.append("</table>")
        lines.append("")
    silence = silence_command(
        common or (firing or resolved)[0].labels if (firing or resolved) else {},
        keys=[k for k in ("alertname", *payload["groupLabels"]) if k in common],
    )
    lines.append(f"To silence: {silence}")
    text = "\n".join(lines)
    body_html = (
        "<html><body>"
        + f"<h2>{html.escape(subject)}</h2>"
        + "".join(rows)
        + f"<p>To silence: <code>{html.escape(silence)}</code></p></body></html>"
    )
    value = float(len(firing))
    if templates.get("subject"):
        subject = _render(str(templates["subject"]), common, value, external_labels, subject)
    if templates.get("body"):
        text = _render(str(templates["body"]), common, value, external_labels, text)
        body_html = "<html><body><pre>" + html.escape(text) + "</pre></body></html>"
    return subject, text, body_html


def _render(tpl: str, labels: Mapping[str, str], value: float, ext: Mapping[str, str], fallback: str) -> str:
    try:
        return parse_template(tpl).render(labels, value, ext)
    except TemplateError as exc:
        return f"{fallback}\n(template error: {exc})"
