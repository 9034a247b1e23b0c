"""Bearer tokens, protected reads, basic auth (bcrypt) and TLS on a real daemon."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from pathlib import Path

import bcrypt
import pytest
import requests

from tests.helpers import DaemonProcess, free_port, start_daemon


def _push(d: DaemonProcess, **kw: object) -> int:
    return requests.post(f"{d.url}/metrics/job/sec", data=b"sec_metric 1\n", timeout=10, **kw).status_code  # type: ignore[arg-type]


def test_protect_reads_needs_token_for_reads_but_not_health(tmp_path: Path) -> None:
    d = start_daemon(tmp_path, "  bearer_token_env: TOK\n  protect_reads: true\n", env={"TOK": "t0k"})
    try:
        auth = {"Authorization": "Bearer t0k"}
        assert requests.get(f"{d.url}/metrics", timeout=5).status_code == 401
        assert requests.get(f"{d.url}/federate", params={"match[]": "up"}, timeout=5).status_code == 401
        assert requests.get(f"{d.url}/metrics", headers=auth, timeout=5).status_code == 200
        assert requests.get(f"{d.url}/-/healthy", timeout=5).status_code == 200
        assert requests.get(f"{d.url}/-/ready", timeout=5).status_code == 200
        assert requests.post(f"{d.url}/-/reload", timeout=5).status_code == 401
        assert _push(d, headers=auth) == 200
        assert requests.put(f"{d.url}/api/v1/admin/wipe", timeout=5).status_code == 401
    finally:
        assert d.stop() == 0


def test_basic_auth_users_gate_every_request(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    d = start_daemon(tmp_path, f"  basic_auth_users:\n    prometheus: '{hashed}'\n")
    try:
        assert requests.get(f"{d.url}/metrics", timeout=5).status_code == 401
        assert requests.get(f"{d.url}/metrics", auth=("prometheus", "wrong"), timeout=5).status_code == 401
        assert requests.get(f"{d.url}/metrics", auth=("nobody", "pw"), timeout=5).status_code == 401
        assert requests.get(f"{d.url}/metrics", auth=("prometheus", "pw"), timeout=5).status_code == 200
        assert _push(d, auth=("prometheus", "pw")) == 200
        assert _push(d) == 401
        garbage = {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe").decode()}
        assert requests.get(f"{d.url}/metrics", headers=garbage, timeout=5).status_code == 401
        assert requests.get(f"{d.url}/metrics", headers={"Authorization": "Basic %%%"}, timeout=5).status_code == 401
    finally:
        assert d.stop() == 0


def test_tls(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    port = free_port()
    d = start_daemon(tmp_path, f"  tls:\n    cert_file: {cert}\n    key_file: {key}\n", port=port, wait=False)
    try:
        url = f"https://127.0.0.1:{port}"
        for _ in range(200):
            try:
                r = requests.get(f"{url}/-/ready", verify=str(cert), timeout=1)
                break
            except requests.exceptions.ConnectionError:
                if d.proc.poll() is not None:
                    raise AssertionError(d.stderr()) from None
                time.sleep(0.05)
        assert r.status_code == 200
        assert requests.post(f"{url}/metrics/job/tls", data=b"tls_m 1\n", verify=str(cert), timeout=5).status_code == 200
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    finally:
        assert d.stop() == 0


def test_body_over_limit_gets_413(tmp_path: Path) -> None:
    d = start_daemon(tmp_path, "  max_body_bytes: 1KiB\n")
    try:
        big = b"".join(b"m%d 1\n" % i for i in range(1000))
        r = requests.post(f"{d.url}/metrics/job/big", data=big, timeout=10)
        assert r.status_code == 413
        assert 'job="big"' not in requests.get(f"{d.url}/metrics", timeout=5).text
    finally:
        assert d.stop() == 0


def test_password_guesses_do_not_stall_other_requests(tmp_path: Path) -> None:
    """bcrypt (cost 12: ~0.25 s of CPU per check) runs off the event loop: while wrong passwords are being
    checked, health checks and valid (cached) credentials are answered at once."""
    import concurrent.futures

    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=12)).decode()
    d = start_daemon(tmp_path, f"  basic_auth_users:\n    prometheus: '{hashed}'\n")
    try:
        assert requests.get(f"{d.url}/metrics", auth=("prometheus", "pw"), timeout=60).status_code == 200  # cached
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            guesses = [pool.submit(requests.get, f"{d.url}/metrics", auth=("prometheus", f"guess{i}"), timeout=120)
                       for i in range(8)]  # fmt: skip
            time.sleep(0.2)  # the guesses are queued for bcrypt now
            started = time.monotonic()
            assert requests.get(f"{d.url}/-/healthy", timeout=60).status_code == 200
            assert requests.get(f"{d.url}/metrics", auth=("prometheus", "pw"), timeout=60).status_code == 200
            fast = time.monotonic() - started
            statuses = sorted(f.result().status_code for f in guesses)
        assert set(statuses) <= {401, 429} and 401 in statuses
        # 8 bcrypt checks take seconds in all; answering on the event loop meanwhile takes milliseconds
        assert fast < 1.5, f"{fast:.2f}s for a health check and a cached login during password guessing"
    finally:
        assert d.stop() == 0
