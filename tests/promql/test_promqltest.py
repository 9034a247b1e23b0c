"""Query-engine cases as promqltest data files (tests/promql/testdata/*.test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.promql.promqltest import PromqlTest

FILES = sorted((Path(__file__).parent / "testdata").glob("*.test"))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_file(path: Path, tmp_path: Path) -> None:
    failures = PromqlTest(path, tmp_path).run()
    assert not failures, "\n".join(failures)
