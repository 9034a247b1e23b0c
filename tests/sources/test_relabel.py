"""metric_relabel_configs as Prometheus applies them."""

from __future__ import annotations

import pytest

from mlwatch.config.parts import RelabelConfig
from mlwatch.sources.relabel import Relabeler


def relabel(rules: list[dict[str, object]], labels: dict[str, str]) -> dict[str, str] | None:
    return Relabeler([RelabelConfig.model_validate(r) for r in rules]).apply(labels)


L = {"__name__": "http_requests_total", "code": "503", "method": "get", "pod_uid": "u1"}


@pytest.mark.parametrize(
    ("rules", "want"),
    [
        ([{"source_labels": ["__name__"], "regex": "http_.*", "action": "keep"}], L),
        ([{"source_labels": ["__name__"], "regex": "http", "action": "keep"}], None),  # anchored
        ([{"source_labels": ["code"], "regex": "5..", "action": "drop"}], None),
        ([{"source_labels": ["missing"], "regex": "", "action": "drop"}], None),  # an absent label is ""
        ([{"source_labels": ["code", "method"], "regex": "(5).*;(.*)", "target_label": "x", "replacement": "$1-$2"}],
         {**L, "x": "5-get"}),
        ([{"source_labels": ["code"], "regex": "(?P<first>.).*", "target_label": "c", "replacement": "${first}xx"}],
         {**L, "c": "5xx"}),
        ([{"source_labels": ["code"], "regex": "nomatch", "target_label": "code", "replacement": "x"}], L),
        ([{"source_labels": ["nothing"], "target_label": "code", "replacement": "$1"}],
         {k: v for k, v in L.items() if k != "code"}),  # empty result removes the label
        ([{"regex": "pod_.*", "action": "labeldrop"}], {k: v for k, v in L.items() if k != "pod_uid"}),
        ([{"regex": "__name__|code", "action": "labelkeep"}], {"__name__": "http_requests_total", "code": "503"}),
        ([{"source_labels": ["__name__"], "regex": "(.*)_total", "target_label": "__name__", "replacement": "$1"}],
         {**L, "__name__": "http_requests"}),
    ],
)  # fmt: skip
def test_actions(rules: list[dict[str, object]], want: dict[str, str] | None) -> None:
    assert relabel(rules, dict(L)) == want


def test_rules_apply_in_order_and_do_not_mutate_the_input() -> None:
    labels = dict(L)
    rules: list[dict[str, object]] = [
        {"source_labels": ["method"], "target_label": "m", "replacement": "$1"},
        {"source_labels": ["m"], "regex": "get", "action": "drop"},
    ]
    assert relabel(rules, labels) is None
    assert labels == L
