"""Fixtures for the config tests: where the fixture files are."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.fixture
def fixtures() -> Path:
    """tests/config/fixtures: a self-signed certificate (tls.crt, tls.key), another key, a non-PEM file."""
    return HERE / "fixtures"
