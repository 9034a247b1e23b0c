"""Hostile input to the daemon's own endpoints: always a clear 4xx, never a 5xx, and the daemon lives on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import DaemonProcess, start_daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    d = start_daemon(tmp_path_factory.mktemp("hostile"))
    requests.post(f"{d.url}/metrics/job/seed", data=b'seed_metric{a="1"} 1\n', timeout=5).raise_for_status()
    yield d
    assert d.stop() == 0


def tokens(pieces: list[str], max_size: int) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(pieces), max_size=max_size).map("".join)


selectorish = tokens(list('{}[]()=~!",.*+?^$|\\ az_:09\n\t@') + ["seed_metric", "offset", "__name__"], 40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(match=st.one_of(selectorish, st.text(max_size=40)))
def test_federate_never_fails_with_5xx(daemon: DaemonProcess, match: str) -> None:
    r = requests.get(f"{daemon.url}/federate", params={"match[]": match}, timeout=10)
    assert r.status_code in (200, 400), (match, r.status_code, r.text)
    if r.status_code == 400:
        assert r.text.strip()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=tokens(list("/ab@=%._-~") + ["job", "base64", "%2F", "%00", "%ZZ", "%C3%28"], 20),
       method=st.sampled_from(["GET", "PUT", "POST", "DELETE", "PATCH"]))
def test_any_path_any_method_is_answered_without_5xx(daemon: DaemonProcess, path: str, method: str) -> None:
    r = requests.request(method, f"{daemon.url}/metrics/{path}", data=b"x 1\n", timeout=10)
    assert r.status_code < 500, (method, path, r.status_code, r.text)


def test_daemon_still_serves_after_the_storm(daemon: DaemonProcess, tmp_path: Path) -> None:
    assert requests.get(f"{daemon.url}/-/healthy", timeout=5).status_code == 200
    assert 'seed_metric{a="1",instance="",job="seed"} 1' in requests.get(f"{daemon.url}/metrics", timeout=5).text
