"""The request sequence Grafana's Prometheus data source sends when a dashboard loads (HTTP method POST)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import Engine

from mlwatch.storage.writer import Writer
from tests.server.test_api import T0, client, writer  # noqa: F401 - fixtures

S = T0 // 1000


async def test_grafana_dashboard_load(client: TestClient[Any, Any], engine: Engine, writer: Writer) -> None:  # noqa: F811
    steps: list[tuple[str, str, dict[str, str]]] = [
        ("GET", "/api/v1/query", {"query": "1+1", "time": str(S)}),  # "Save & test"
        ("GET", "/api/v1/status/buildinfo", {}),
        ("POST", "/api/v1/labels", {"start": str(S - 3600), "end": str(S + 3600)}),
        ("GET", "/api/v1/label/__name__/values", {"start": str(S - 3600), "end": str(S + 3600)}),
        ("GET", "/api/v1/metadata", {}),
        ("POST", "/api/v1/series", {"match[]": "http_requests_total", "start": str(S - 3600), "end": str(S + 3600)}),
        ("GET", "/api/v1/label/code/values", {"match[]": 'http_requests_total{job="api"}'}),
        ("POST", "/api/v1/query_range", {"query": "sum by (code) (rate(http_requests_total[1m]))",
                                         "start": str(S + 60), "end": str(S + 540), "step": "30"}),
        ("POST", "/api/v1/query", {"query": "sum(http_requests_total)", "time": str(S + 300)}),
        ("GET", "/api/v1/query_exemplars", {"query": "http_requests_total", "start": str(S), "end": str(S + 600)}),
    ]
    for method, path, params in steps:
        if method == "GET":
            r = await client.get(path, params=params)
        else:
            r = await client.post(path, data=params)
        body = await r.json()
        assert r.status == 200, (path, body)
        assert body["status"] == "success", (path, body)
        assert r.headers["Content-Type"].startswith("application/json")
    r = await client.post("/api/v1/query_range", data=steps[7][2])
    result = (await r.json())["data"]["result"]
    assert [s["metric"] for s in result] == [{"code": "200"}, {"code": "500"}]
    assert len(result[0]["values"]) == 17
