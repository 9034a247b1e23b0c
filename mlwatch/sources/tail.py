"""Rotation-safe tailing of the files a glob matches, with offsets that are committed, not assumed.

Files are known by identity (device, inode) and a fingerprint (their first bytes), so that:

- **rename rotation** (``x.log`` -> ``x.log.1``, new ``x.log``): the old file stays open (or, after a
  restart, is found again among its siblings by identity) and its unread lines are read first;
- **copytruncate**: a new file whose first bytes equal a tracked file's is that file's copy and is
  read only from the tracked offset on; the original, now shorter than its offset, is read again
  from 0; a file that shrinks without a copy is read from 0 and counted (reason ``truncated``), and
  what it held unread is lost: :attr:`ReadResult.lost_bytes` counts the bytes between the offset and
  the size last seen, ``lost_lines`` their lines when they had all been scanned (a partial line: one);
- **vanish and reappear**: a deleted file is read to its end through the open descriptor and then
  forgotten; a file that appears later (new identity) is read from its beginning;
- **inode reuse**: a known identity whose first bytes changed is a new file;
- **partial lines**: a line is returned only once its newline has arrived; a line longer than
  ``max_line_bytes`` is skipped (reason ``line_too_long``) without being held in memory;
- **faults** that stop a file from being read are reported in :attr:`ReadResult.problems` as
  ``(reason, message)`` (the source is then down, CONTRACT §6): a file that cannot be opened
  (``permission_denied``, ``io_error``), a read that fails (``io_error``), and, for a literal path (no
  glob characters) or the path of a file being tailed, nothing there (``not_found``) or something that
  is not a regular file (``not_a_file``). Other files go on being read; a fault that clears is
  recovered from at the next read (a file that appears is read from its beginning).

:meth:`Tailer.read` never changes the committed offsets: it returns the lines and the proposed
:class:`TailState`; the caller makes it current with :meth:`Tailer.commit` once the samples derived
from those lines are committed, or drops it, and the same lines are read again.
"""

from __future__ import annotations

import collections
import errno
import glob
import itertools
import os
import stat
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["FileState", "ReadResult", "TailState", "Tailer"]

FP_BYTES = 256
MAX_SIBLINGS = 2000
Ident = tuple[int, int]


@dataclass(frozen=True, slots=True)
class FileState:
    path: str
    dev: int
    ino: int
    offset: int  # bytes consumed: always just after a newline (or inside a skipped long line)
    fp: bytes  # the file's first bytes (up to FP_BYTES) as last seen
    skipping: bool = False  # inside a line longer than max_line_bytes
    gone: bool = False  # no longer at a matched path: read to its end, then forgotten
    size: int = 0  # the file's size when last read: bytes in [offset, size) are seen but unread
    unread_lines: int = -1  # lines in [offset, size) (a partial one counts), -1 when not scanned

    def unread(self) -> tuple[int, int]:
        """Bytes and lines (-1: not known) seen but not read: what a truncation without a copy loses."""
        lost = max(0, self.size - self.offset)
        return lost, (self.unread_lines if lost else 0)

    @property
    def ident(self) -> Ident:
        return (self.dev, self.ino)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "dev": self.dev, "ino": self.ino, "offset": self.offset,
                "fp": self.fp.hex(), "skip": self.skipping, "gone": self.gone, "size": self.size,
                "unread_lines": self.unread_lines}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FileState:
        return cls(str(d["path"]), int(d["dev"]), int(d["ino"]), int(d["offset"]), bytes.fromhex(d["fp"]),
                   bool(d.get("skip", False)), bool(d.get("gone", False)), int(d.get("size", 0)),
                   int(d.get("unread_lines", -1)))  # fmt: skip


@dataclass(frozen=True, slots=True)
class TailState:
    files: dict[Ident, FileState] = field(default_factory=dict)
    started: bool = False  # False only before the very first read (start_at applies then)

    def to_json(self) -> dict[str, Any]:
        return {"started": self.started, "files": [f.to_json() for f in self.files.values()]}

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> TailState:
        if not d:
            return cls()
        files = [FileState.from_json(f) for f in d.get("files", [])]
        return cls({f.ident: f for f in files}, bool(d.get("started", True)))


@dataclass(slots=True)
class ReadResult:
    lines: list[tuple[bytes, str]]  # (line without its newline, position "fingerprint:offset")
    state: TailState
    bad: collections.Counter[str]
    rejected: list[str]
    more: bool  # stopped at the byte budget with more to read
    lost_bytes: int = 0  # unread bytes of files truncated without a copy (copytruncate's own loss)
    lost_lines: int = 0  # the lines among them that could be counted (see FileState.unread)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (reason, message): what could not be read


def _fp_key(fp: bytes) -> str:
    return fp[:16].hex() if fp else "empty"


class Tailer:
    """Tails every file matching ``pattern``. Not thread-safe; one per log source."""

    def __init__(self, pattern: str, *, start_at_end: bool = False, max_line_bytes: int = 1 << 20,
                 read_bytes: int = 8 << 20, positions: bool = True) -> None:  # fmt: skip
        self.pattern = pattern
        self.start_at_end = start_at_end
        self.max_line_bytes = max_line_bytes
        self.read_bytes = read_bytes
        self.positions = positions  # compute each line's "fingerprint:offset" (sampling needs it)
        self.state = TailState()
        self._fds: dict[Ident, int] = {}

    # ---------------------------------------------------------------- state
    def restore(self, state: TailState) -> None:
        self.state = state

    def commit(self, state: TailState) -> None:
        self.state = state
        for ident in list(self._fds):
            if ident not in state.files:
                os.close(self._fds.pop(ident))

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    # ---------------------------------------------------------------- files
    def _open(self, path: str, ident: Ident, problems: list[tuple[str, str]] | None = None) -> int | None:
        fd = self._fds.get(ident)
        if fd is not None:
            return fd
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return None  # gone between the glob and the open: seen at the next read
        except OSError as exc:
            if problems is not None:
                problems.append(_problem(exc, f"cannot open {path}"))
            return None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != ident:  # replaced between stat and open
            os.close(fd)
            return None
        self._fds[ident] = fd
        return fd

    @staticmethod
    def _head(fd: int) -> bytes:
        try:
            return os.pread(fd, FP_BYTES, 0)
        except OSError:
            return b""

    def _matched(self, problems: list[tuple[str, str]]) -> dict[Ident, str]:
        """The regular files the pattern matches, by identity. A literal path, or a tracked file's path,
        that holds nothing or something other than a regular file is a problem; for a glob, a
        non-matching or non-file entry is not (it may be a directory of other logs)."""
        literal = glob.escape(self.pattern) == self.pattern
        watched = {f.path for f in self.state.files.values() if not f.gone}
        out: dict[Ident, str] = {}
        for path in [self.pattern] if literal else sorted(glob.glob(self.pattern)):
            try:
                st = os.stat(path)
            except FileNotFoundError:
                if literal:
                    problems.append(("not_found", f"{path}: no such file"))
                continue
            except OSError as exc:
                problems.append(_problem(exc, f"cannot stat {path}"))
                continue
            if stat.S_ISREG(st.st_mode):
                out.setdefault((st.st_dev, st.st_ino), path)
            elif literal or path in watched:
                kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
                problems.append(("not_a_file", f"{path} is {kind}; a log source reads regular files"))
        return out

    def _find_sibling(self, f: FileState) -> str | None:
        """After a restart, where a rotated-away file went (same identity and first bytes)."""
        directory = os.path.dirname(f.path) or "."
        base = os.path.basename(f.path)
        stem = base.split(".")[0]
        try:
            names = sorted(os.listdir(directory))[:MAX_SIBLINGS]
        except OSError:
            return None
        for name in names:
            if not name.startswith(stem):
                continue
            path = os.path.join(directory, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == f.ident:
                return path
        return None

    def _find_copy(self, f: FileState, files: dict[Ident, FileState]) -> FileState | None:
        """The copy copytruncate made of ``f`` (same first bytes, at least as long as what was read), to be
        read from ``f``'s offset to its end and then forgotten; None when there is none."""
        directory = os.path.dirname(f.path) or "."
        stem = os.path.basename(f.path).split(".")[0]
        try:
            names = sorted(os.listdir(directory))[:MAX_SIBLINGS]
        except OSError:
            return None
        for name in names:
            path = os.path.join(directory, name)
            if not name.startswith(stem) or path == f.path:
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            ident = (st.st_dev, st.st_ino)
            if ident in files or st.st_size < f.offset or not os.path.isfile(path):
                continue
            fd = self._open(path, ident)
            if fd is None:
                continue
            if self._head(fd) == f.fp:
                return FileState(path, *ident, f.offset, f.fp, gone=True)
            os.close(self._fds.pop(ident))
        return None

    # ---------------------------------------------------------------- reading
    def read(self) -> ReadResult:
        """New complete lines of every file, rotated-away files first, up to the byte budget."""
        bad: collections.Counter[str] = collections.Counter()
        rejected: list[str] = []
        problems: list[tuple[str, str]] = []
        matched = self._matched(problems)
        files: dict[Ident, FileState] = {}
        first = not self.state.started
        restarted: list[FileState] = []
        # Known files: still there, moved away, truncated or replaced.
        for ident, f in self.state.files.items():
            path = matched.get(ident)
            if path is None:
                if ident not in self._fds:
                    found = self._find_sibling(f)
                    if found is None or self._open(found, ident) is None:
                        continue  # gone for good: forget it
                    path = found
                files[ident] = replace(f, gone=True, path=path or f.path)
                continue
            fd = self._open(path, ident, problems)
            if fd is None:
                files[ident] = f  # cannot be opened now (reported): its offset is kept for when it can
                continue
            head = self._head(fd)
            n = min(len(head), len(f.fp))
            size = os.fstat(fd).st_size
            if head[:n] != f.fp[:n] or size < f.offset:
                # Truncated (copytruncate, or shrunk) or rewritten in place: read it again from 0.
                restarted.append(f)
                files[ident] = FileState(path, *ident, 0, head)
                continue
            files[ident] = replace(f, path=path, gone=False)
        # New files: a copy of a tracked file (copytruncate) starts where the original is.
        originals = {f.fp: f for f in self.state.files.values() if len(f.fp) == FP_BYTES}
        copied: set[bytes] = set()
        older: set[Ident] = set()  # copies made by copytruncate: their lines come before the original's
        for ident, path in matched.items():
            if ident in files:
                continue
            fd = self._open(path, ident, problems)
            if fd is None:
                continue
            head = self._head(fd)
            size = os.fstat(fd).st_size
            original = originals.get(head) if len(head) == FP_BYTES else None
            if original is not None:
                offset = min(original.offset, size)
                copied.add(head)
                older.add(ident)
            elif first and self.start_at_end:
                offset = size
            else:
                offset = 0
            files[ident] = FileState(path, *ident, offset, head)
        for f in restarted:
            if f.fp not in copied and len(f.fp) == FP_BYTES:
                copy = self._find_copy(f, files)
                if copy is not None:
                    files[copy.ident] = copy
                    copied.add(f.fp)
                    older.add(copy.ident)
        lost_bytes = lost_lines = 0
        for f in restarted:
            if f.fp not in copied:
                bad["truncated"] += 1
                nbytes, nlines = f.unread()
                lost_bytes += nbytes
                lost_lines += max(nlines, 0)
        # Read: rotated-away files first (their lines are older), then by path.
        lines: list[tuple[bytes, str]] = []
        budget = self.read_bytes
        more = False
        order = sorted(files.values(), key=lambda f: (not (f.gone or f.ident in older), f.path))
        for f in order:
            fd = self._fds.get(f.ident)
            if fd is None:
                continue
            if budget <= 0:
                more = True
                break
            got: list[tuple[bytes, str]] = []
            try:
                new, used, exhausted = self._read_file(fd, f, budget, got, bad, rejected)
            except OSError as exc:  # EIO and the like: none of its lines now, the same offset next time
                problems.append(_problem(exc, f"cannot read {f.path}"))
                continue
            lines += got
            budget -= used
            if new.gone and exhausted:
                del files[f.ident]
            else:
                files[f.ident] = new
            if not exhausted:
                more = True
        return ReadResult(lines, TailState(files, True), bad, rejected, more, lost_bytes, lost_lines, problems)

    def _read_file(self, fd: int, f: FileState, budget: int, lines: list[tuple[bytes, str]],
                   bad: collections.Counter[str], rejected: list[str]) -> tuple[FileState, int, bool]:  # fmt: skip
        offset, skipping, fp = f.offset, f.skipping, f.fp
        used = 0
        limit = self.max_line_bytes
        while used < budget:
            chunk = os.pread(fd, max(min(budget - used, 8 << 20), limit + 1), offset)
            if not chunk:
                break
            used += len(chunk)
            if len(fp) < FP_BYTES and offset < FP_BYTES:
                fp = self._head(fd)
            end = chunk.rfind(b"\n")
            if end == -1:
                if len(chunk) > limit or skipping:
                    if not skipping:
                        bad["line_too_long"] += 1
                        rejected.append(chunk[:200].decode("utf-8", "replace"))
                    skipping = True
                    offset += len(chunk)
                    continue
                break  # a partial line: wait for its newline
            body = chunk[: end + 1]
            start = 0
            if skipping:
                start = body.find(b"\n") + 1
                skipping = False
            parts = body[start:].split(b"\n")
            parts.pop()  # what follows the last newline: nothing
            if not self.positions and (len(body) - start <= limit or max(map(len, parts), default=0) <= limit):
                lines.extend(zip(parts, itertools.repeat("")))  # the common case, at C speed
            else:
                key = _fp_key(fp)
                pos = offset + start
                for raw in parts:
                    if len(raw) > limit:
                        bad["line_too_long"] += 1
                        rejected.append(raw[:200].decode("utf-8", "replace"))
                    else:
                        lines.append((raw, f"{key}:{pos}" if self.positions else ""))
                    pos += len(raw) + 1
            offset += end + 1
            if end + 1 < len(chunk):
                used -= len(chunk) - end - 1  # the partial rest is read again next time
        size = os.fstat(fd).st_size
        exhausted = offset >= size or (not skipping and _no_newline_after(fd, offset, size, limit))
        # What is left is a partial line (one line, should it be lost) or, at the budget, not scanned.
        unread_lines = 0 if offset >= size else 1 if exhausted else -1
        return (
            replace(f, offset=offset, skipping=skipping, fp=fp, size=size, unread_lines=unread_lines),
            used,
            exhausted,
        )


def _problem(exc: OSError, what: str) -> tuple[str, str]:
    """``(reason, message)`` for an OSError while opening or reading a log file."""
    reason = "permission_denied" if exc.errno in (errno.EACCES, errno.EPERM) else "io_error"
    return reason, f"{what}: {exc.strerror or exc}"


def _no_newline_after(fd: int, offset: int, size: int, limit: int) -> bool:
    """True when only a partial line (shorter than the limit) remains after ``offset``."""
    if size - offset > limit:
        return False
    return b"\n" not in os.pread(fd, size - offset, offset)
