"""Tailing: partial lines, long lines, rename rotation, copytruncate, shrink, vanish/reappear, restarts."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mlwatch.sources.tail import Tailer, TailState


def drain(t: Tailer) -> list[bytes]:
    """Read everything available and commit it, as the log source does after a successful write."""
    out: list[bytes] = []
    while True:
        r = t.read()
        out += [line for line, _ in r.lines]
        t.commit(r.state)
        if not r.more:
            return out


def append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def test_partial_line_waits_for_its_newline(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_text("one\ntw")
    t = Tailer(str(p))
    assert drain(t) == [b"one"]
    append(p, "o\nthree")
    assert drain(t) == [b"two"]
    append(p, "\n")
    assert drain(t) == [b"three"]


def test_uncommitted_reads_are_read_again(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_text("a\nb\n")
    t = Tailer(str(p))
    r = t.read()
    assert [x for x, _ in r.lines] == [b"a", b"b"]
    # not committed (the write failed): the same lines come again
    assert [x for x, _ in t.read().lines] == [b"a", b"b"]


def test_start_at_end_only_on_first_start(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_text("old\n")
    t = Tailer(str(tmp_path / "*.log"), start_at_end=True)
    assert drain(t) == []
    append(p, "new\n")
    (tmp_path / "b.log").write_text("b1\n")  # a file that appears later is read from its beginning
    assert sorted(drain(t)) == [b"b1", b"new"]


def test_long_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_bytes(b"ok1\n" + b"x" * 5000 + b"\nok2\n" + b"y" * 3000)
    t = Tailer(str(p), max_line_bytes=1000)
    r = t.read()
    t.commit(r.state)
    assert [x for x, _ in r.lines] == [b"ok1", b"ok2"]
    assert r.bad["line_too_long"] == 2  # the unterminated one is already too long
    append(p, "yyy\nok3\n")
    assert drain(t) == [b"ok3"]


def test_rename_rotation_finishes_the_old_file_first(tmp_path: Path) -> None:
    p = tmp_path / "app.log"
    p.write_text("1\n2\n")
    t = Tailer(str(p))
    assert drain(t) == [b"1", b"2"]
    append(p, "3\n")
    p.rename(tmp_path / "app.log.1")
    p.write_text("4\n")
    append(tmp_path / "app.log.1", "3b\n")  # the writer still had the old file open
    assert drain(t) == [b"3", b"3b", b"4"]
    assert drain(t) == []


def test_rename_rotation_across_a_restart(tmp_path: Path) -> None:
    p = tmp_path / "app.log"
    p.write_text("1\n")
    t = Tailer(str(p))
    assert drain(t) == [b"1"]
    saved = TailState.from_json(t.state.to_json())
    t.close()
    append(p, "2\n")
    p.rename(tmp_path / "app.log.1")
    p.write_text("3\n")
    t2 = Tailer(str(p))
    t2.restore(saved)
    assert drain(t2) == [b"2", b"3"]


def test_copytruncate(tmp_path: Path) -> None:
    p = tmp_path / "app.log"
    lines = [f"line {i} " + "." * 300 for i in range(5)]  # longer than the fingerprint
    p.write_text("".join(x + "\n" for x in lines[:3]))
    t = Tailer(str(tmp_path / "app.log*"))
    assert len(drain(t)) == 3
    append(p, lines[3] + "\n")
    shutil.copy(p, tmp_path / "app.log.1")  # copy, then truncate, as logrotate does
    with open(p, "r+") as f:
        f.truncate(0)
    append(p, lines[4] + "\n")
    got = drain(t)
    assert [g.decode() for g in got] == [lines[3], lines[4]]


def test_shrink_vanish_reappear(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_text("a\nb\nc\n")
    t = Tailer(str(p))
    assert drain(t) == [b"a", b"b", b"c"]
    with open(p, "r+") as f:  # shrink in place without a copy
        f.truncate(0)
    append(p, "d\n")
    r = t.read()
    t.commit(r.state)
    assert [x for x, _ in r.lines] == [b"d"]
    append(p, "e\n")
    os.unlink(p)  # vanish: what was written is still read through the open file
    assert drain(t) == [b"e"]
    assert t.state.files == {}
    p.write_text("f\n")  # reappear
    assert drain(t) == [b"f"]


def test_inode_reuse_with_other_content_is_a_new_file(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_text("first file\n")
    t = Tailer(str(p))
    assert drain(t) == [b"first file"]
    saved = t.state.to_json()
    t.close()
    with open(p, "w") as f:  # same inode, rewritten with other content, longer than before
        f.write("second file, other content\n")
    t2 = Tailer(str(p))
    t2.restore(TailState.from_json(saved))
    assert drain(t2) == [b"second file, other content"]


LOGROTATE = shutil.which("logrotate") or ("/usr/sbin/logrotate" if os.path.exists("/usr/sbin/logrotate") else None)


@pytest.mark.skipif(LOGROTATE is None, reason="needs Debian's logrotate (apt-get install logrotate)")
@pytest.mark.parametrize("mode", ["create", "copytruncate"])
def test_real_logrotate(tmp_path: Path, mode: str) -> None:
    p = tmp_path / "app.log"
    conf = tmp_path / "rotate.conf"
    conf.write_text(f"{p} {{\n  rotate 3\n  {mode}\n  missingok\n  nocompress\n}}\n")
    state = tmp_path / "state"
    t = Tailer(str(p))
    written = 0
    got: list[bytes] = []
    for round_ in range(4):
        for i in range(50):
            append(p, f"r{round_} line {i} " + "x" * 300 + "\n")
            written += 1
        got += drain(t)[: 10**9]
        for i in range(20):  # unread lines at rotation time
            append(p, f"r{round_} tail {i} " + "y" * 300 + "\n")
            written += 1
        assert LOGROTATE is not None
        subprocess.run([LOGROTATE, "-f", "-s", str(state), str(conf)], check=True, timeout=60)
        got += drain(t)
    got += drain(t)
    assert len(got) == written
    assert len(set(got)) == written


def test_truncation_without_a_copy_counts_the_lost_bytes_and_lines(tmp_path: Path) -> None:
    p = tmp_path / "app.log"
    p.write_text("a\nb\n")
    t = Tailer(str(tmp_path / "app.log*"))
    assert drain(t) == [b"a", b"b"]
    append(p, "half a li")  # seen, not yet read: a partial line
    r = t.read()
    t.commit(r.state)
    assert r.lines == [] and (r.lost_bytes, r.lost_lines) == (0, 0)
    with open(p, "r+") as f:  # truncated, and no rotated copy holds the partial line
        f.truncate(0)
    append(p, "c\n")
    r = t.read()
    t.commit(r.state)
    assert [x for x, _ in r.lines] == [b"c"]
    assert (r.lost_bytes, r.lost_lines) == (9, 1)
    assert r.bad["truncated"] == 1
    saved = TailState.from_json(t.state.to_json())  # size and unread lines survive a restart
    assert saved == t.state


def test_truncation_at_the_read_budget_counts_bytes_only(tmp_path: Path) -> None:
    p = tmp_path / "app.log"
    p.write_text("".join(f"{i:04d}\n" for i in range(100)))  # 500 bytes
    t = Tailer(str(p), read_bytes=100, max_line_bytes=99)
    r = t.read()
    t.commit(r.state)
    assert r.more and len(r.lines) == 20
    with open(p, "r+") as f:
        f.truncate(0)
    append(p, "x\n")
    r = t.read()
    assert (r.lost_bytes, r.lost_lines) == (400, 0)  # the rest was never scanned: its lines are unknown


def test_copytruncate_with_its_copy_loses_nothing(tmp_path: Path) -> None:
    p = tmp_path / "app.log"
    lines = [f"line {i} " + "." * 300 for i in range(4)]
    p.write_text("".join(x + "\n" for x in lines[:2]))
    t = Tailer(str(p))  # the copy is not matched by the pattern: found as a sibling
    assert len(drain(t)) == 2
    append(p, lines[2] + "\n")
    shutil.copy(p, tmp_path / "app.log.1")
    with open(p, "r+") as f:
        f.truncate(0)
    append(p, lines[3] + "\n")
    r = t.read()
    t.commit(r.state)
    assert [x.decode() for x, _ in r.lines] == [lines[2], lines[3]]
    assert (r.lost_bytes, r.lost_lines) == (0, 0)
