"""The payload of ``mlwatch notify test``: one firing ``MlwatchTestNotification`` alert."""

from __future__ import annotations

import hashlib
from typing import Any

from mlwatch.notify.message import RoutedAlert, build_payload


def make_test_payload(notifier: str, now: float, external_url: str = "") -> dict[str, Any]:
    labels = {"alertname": "MlwatchTestNotification", "severity": "none"}
    alert = RoutedAlert(
        "0" * 16,
        labels,
        {"summary": f"a test notification through {notifier!r} from mlwatch"},
        now,
        None,
        1.0,
        "mlwatch notify test",
        external_url,
        now,
    )
    key = hashlib.sha256(f"test|{notifier}|{now!r}".encode()).hexdigest()[:32]
    return build_payload(
        key=key,
        receiver=notifier,
        group_key="{}:test",
        group_labels={"alertname": labels["alertname"]},
        firing=[alert],
        resolved=[],
        external_url=external_url,
    )
