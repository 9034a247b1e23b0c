"""A real Prometheus scrapes mlwatch's /metrics and /federate (honor_labels: true, as for Pushgateway)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import requests

from tests.integration.peers import run_prometheus

pytestmark = pytest.mark.integration

SEED_PUSH = (
    'curl -sS -X POST http://localhost:{port}/metrics/job/ai-model --data-binary @<(echo "# HELP ai_model_accuracy '
    'Accuracy of the AI model"; echo "ai_model_accuracy {{model=\\"my-model\\"}} 0.93")'
)


def seed_push(port: int) -> subprocess.CompletedProcess[str]:
    """The seed chapter's curl command, verbatim but for the port."""
    return subprocess.run(["bash", "-c", SEED_PUSH.format(port=port)], capture_output=True, text=True, timeout=30)


def test_seed_curl_push_appears_on_metrics(daemon_factory: object, tmp_path: Path) -> None:
    d = daemon_factory()  # type: ignore[operator]
    done = seed_push(d.port)
    assert done.returncode == 0, done.stderr
    body = requests.get(f"{d.url}/metrics", timeout=5).text
    lines = body.splitlines()
    assert "# HELP ai_model_accuracy Accuracy of the AI model" in lines
    assert any(
        line in ('ai_model_accuracy{job="ai-model",model="my-model"} 0.93',
                 'ai_model_accuracy{instance="",job="ai-model",model="my-model"} 0.93')
        for line in lines
    ), body
    assert any(line.startswith("mlwatch_") for line in lines)
    assert any(line.startswith('push_time_seconds{') and 'job="ai-model"' in line for line in lines)


def test_prometheus_scrapes_metrics_and_federate(daemon_factory: object, tmp_path: Path) -> None:
    d = daemon_factory("push:\n  sample_interval: 1s\nevaluation_interval: 1s\n")  # type: ignore[operator]
    assert seed_push(d.port).returncode == 0
    target = f"127.0.0.1:{d.port}"
    scrape = [
        {"job_name": "mlwatch", "honor_labels": True, "static_configs": [{"targets": [target]}]},
        {"job_name": "federate", "honor_labels": True, "metrics_path": "/federate",
         "params": {"match[]": ['{__name__="ai_model_accuracy"}', '{__name__=~"mlwatch_storage_series"}']},
         "static_configs": [{"targets": [target]}]},
    ]
    with run_prometheus(tmp_path, scrape) as prom:
        up = prom.wait_for('up{job="mlwatch"} == 1')
        assert up[0]["value"][1] == "1"
        res = prom.wait_for('ai_model_accuracy{job="ai-model",model="my-model"}')
        assert res[0]["value"][1] == "0.93"
        prom.wait_for('up{job="federate"} == 1')
        # Federated series carry mlwatch's stored labels; the self-metrics were recorded by the daemon itself.
        fed = prom.wait_for('mlwatch_storage_series{job="mlwatch"}')
        assert float(fed[0]["value"][1]) >= 1
        assert fed[0]["metric"]["instance"] == target


def test_federate_format(daemon_factory: object) -> None:
    d = daemon_factory()  # type: ignore[operator]
    assert seed_push(d.port).returncode == 0
    r = requests.get(f"{d.url}/federate", params={"match[]": "ai_model_accuracy"}, timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    lines = r.text.splitlines()
    assert lines[0] == "# TYPE ai_model_accuracy untyped"
    name_labels, value, ts = lines[1].split(" ")
    assert name_labels == 'ai_model_accuracy{job="ai-model",model="my-model"}'
    assert value == "0.93" and int(ts) > 1_700_000_000_000
    # No match[]: empty, as Prometheus answers.
    assert requests.get(f"{d.url}/federate", timeout=5).text == ""
    bad = requests.get(f"{d.url}/federate", params={"match[]": "rate(x[5m])"}, timeout=5)
    assert bad.status_code == 400 and "invalid selector" in bad.text
