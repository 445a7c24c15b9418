"""Durability before acknowledgement, seen in the system calls: the real code runs under
`strace -f`, and each test checks that the file and its directory are fsync'd before the
rename that publishes the file, and before the call returns (the acknowledgement).

Only a power cut shows a missing fsync otherwise: every other test passes without one. Each
scenario is a small script in a subprocess that marks its steps with `access()` on names that
do not exist (`MARK-<step>`), so the trace says what happened before each step.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

STRACE = shutil.which("strace")
pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="strace traces Linux system calls"),
    pytest.mark.skipif(STRACE is None, reason="strace is not installed (./scripts/install-strace "
                                              "installs it; ./scripts/test runs that)"),
]
CALLS = ("fsync", "fdatasync", "rename", "renameat", "renameat2", "unlink", "unlinkat",
         "access", "faccessat", "faccessat2")
KIND = {"fdatasync": "fsync", "renameat": "rename", "renameat2": "rename",
        "unlinkat": "unlink", "faccessat": "mark", "faccessat2": "mark", "access": "mark"}
_CALL = re.compile(r"^(?P<name>\w+)\((?P<args>.*)\)\s+=\s+(?P<ret>-?\d+)")
_FD_PATH = re.compile(r"^\d+<(?P<path>[^>]*)>")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Call:
    kind: str  # fsync (fdatasync too), rename, unlink, mark
    paths: tuple[str, ...]  # fsync: the file; rename: (old, new); unlink, mark: the path


def trace(tmp_path: Path, script: str) -> list[Call]:
    """Run `script` (with `ROOT`, a Path to work in) under strace; its calls, in the order
    they completed (an interrupted call counts where it returned)."""
    root = tmp_path / "root"
    root.mkdir()
    program = tmp_path / "scenario.py"
    program.write_text("import sys\nfrom pathlib import Path\nROOT = Path(sys.argv[1])\n"
                       "def mark(step):\n    import os\n    os.access(ROOT / f'MARK-{step}', "
                       "os.F_OK)\n" + textwrap.dedent(script))
    out = tmp_path / "strace.out"
    assert STRACE is not None
    done = subprocess.run([STRACE, "-f", "-qq", "-y", "-o", str(out), "-e",
                           "trace=" + ",".join(CALLS), sys.executable, str(program), str(root)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return parse(out.read_text(), str(root))


def parse(text: str, root: str) -> list[Call]:
    """The calls on paths under `root`, from `strace -f -y` output."""
    calls: list[Call] = []
    pending: dict[str, str] = {}
    for line in text.splitlines():
        pid, _, rest = line.partition(" ")
        rest = rest.strip()
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest.removesuffix("<unfinished ...>")
            continue
        if rest.startswith("<..."):
            rest = pending.pop(pid, "") + rest.split("resumed>", 1)[1]
        found = _CALL.match(rest)
        if found is None:
            continue
        name, args = found["name"], found["args"]
        kind = KIND.get(name, name)
        if kind != "mark" and found["ret"] != "0":
            continue
        if kind == "fsync":
            fd = _FD_PATH.match(args)
            paths: tuple[str, ...] = (fd["path"],) if fd else ()
        else:
            paths = tuple(_QUOTED.findall(args))
        if paths and all(p.startswith(root) for p in paths):
            calls.append(Call(kind, paths))
    return calls


def index(calls: list[Call], kind: str, *paths: Path | str, after: int = -1) -> int:
    """The position of the first such call after position `after`; fails if there is none."""
    wanted = tuple(str(p) for p in paths)
    for i, call in enumerate(calls):
        if i > after and call.kind == kind and call.paths == wanted:
            return i
    raise AssertionError(f"no {kind}{wanted} after call {after} in:\n" +
                         "\n".join(f"{i}: {c.kind} {c.paths}" for i, c in enumerate(calls)))


def mark(calls: list[Call], root: Path, step: str) -> int:
    return index(calls, "mark", root / f"MARK-{step}")


def test_a_log_append_returns_only_after_the_shard_is_fsyncd(tmp_path: Path) -> None:
    calls = trace(tmp_path, """
        import asyncio
        from trackd.log import shard
        from trackd.log.records import Entry
        from trackd.log.writer import LogWriter

        async def main():
            writer = LogWriter(shard.shard_path(ROOT, "gw0"), max_pending_bytes=1 << 20)
            writer.start(asyncio.get_running_loop())
            mark("started")
            await writer.append([Entry("web", "m1", "track", "2024-05-01T10:00:00.000Z",
                                       b'{"messageId": "m1"}')])
            mark("acknowledged")
            writer.close()

        asyncio.run(main())
    """)
    root = tmp_path / "root"
    shard_file = next(root.glob("*.db"))
    started, acknowledged = mark(calls, root, "started"), mark(calls, root, "acknowledged")
    # the commit of the append: its WAL frames reach the disk before append() returns
    synced = index(calls, "fsync", f"{shard_file}-wal", after=started)
    assert synced < acknowledged
    # the WAL file's directory entry too (once, when SQLite created it)
    assert index(calls, "fsync", root) < acknowledged


def test_an_archive_flush_fsyncs_its_intent_its_files_and_their_directories(
        tmp_path: Path) -> None:
    calls = trace(tmp_path, """
        import asyncio
        from trackd.archive.stage import ArchiveStage
        from trackd.log import shard
        from trackd.log.reader import LogReader
        from trackd.log.records import Entry
        from trackd.log.writer import LogWriter
        from trackd.observability import Registry
        from trackd.settings import ArchiveSettings

        body = b'{"messageId": "m1", "type": "track", "userId": "u1"}'

        async def write():
            writer = LogWriter(shard.shard_path(ROOT / "log", "gw0"),
                               max_pending_bytes=1 << 20)
            writer.start(asyncio.get_running_loop())
            await writer.append([Entry("web", "m1", "track", "2024-05-01T10:00:00.000Z", body)])
            writer.close()

        (ROOT / "log").mkdir()
        asyncio.run(write())
        reader = LogReader(ROOT / "log")
        stage = ArchiveStage(ArchiveSettings(), reader, ROOT / "archive", Registry())
        (ROOT / "archive").mkdir()
        reader.register("archive")
        records = reader.read("archive")
        mark("flushing")
        stage.flush(records, {}, {"gw0": records[-1].offset}, "f1")
        mark("flushed")
    """)
    root = tmp_path / "root"
    archive = root / "archive"
    flushing, flushed = mark(calls, root, "flushing"), mark(calls, root, "flushed")
    intent = archive / "_flush.json"
    hidden = archive / f".{intent.name}.tmp"
    # 1. the intent: fsync'd, renamed into place, its directory fsync'd
    step = index(calls, "fsync", hidden, after=flushing)
    step = index(calls, "rename", hidden, intent, after=step)
    step = index(calls, "fsync", archive, after=step)
    # 2. the file: written under a hidden name, fsync'd, renamed, its directory fsync'd
    partition = archive / "source=web" / "date=2024-05-01"
    final = partition / "part-f1.parquet"
    tmp = partition / ".part-f1.parquet.tmp"
    step = index(calls, "fsync", tmp, after=step)
    step = index(calls, "rename", tmp, final, after=step)
    step = index(calls, "fsync", partition, after=step)
    # the new partition directories' own entries
    step = index(calls, "fsync", partition.parent, after=step)
    step = index(calls, "fsync", archive, after=step)
    # 3. then, and only then, the intent goes
    step = index(calls, "unlink", intent, after=step)
    assert step < flushed


def test_an_archive_erasure_fsyncs_a_rewritten_file_and_the_directory_of_a_removed_one(
        tmp_path: Path) -> None:
    calls = trace(tmp_path, """
        from trackd.archive import files
        from trackd.archive.erase import erase_archive
        from trackd.log.records import Record

        def record(offset, user, day):
            body = ('{"messageId": "m%d", "type": "track", "userId": "%s"}' % (offset, user))
            return Record("gw0", offset, "web", f"m{offset}", "track", f"2024-05-{day}T10:00:00Z",
                          body.encode())

        both = [record(1, "doomed", "01"), record(2, "kept", "01")]
        alone = [record(3, "doomed", "02")]
        for rows in (both, alone):
            for partition, group in files.group(rows).items():
                files.write_file(ROOT, partition, group, "part-1")
        mark("erasing")
        assert erase_archive(ROOT, {"doomed"}, lambda b: b"doomed" in b) == 2
        mark("erased")
    """)
    root = tmp_path / "root"
    erasing, erased = mark(calls, root, "erasing"), mark(calls, root, "erased")
    rewritten = root / "source=web" / "date=2024-05-01" / "part-1.parquet"
    tmp = rewritten.with_name(".part-1.parquet.tmp")
    step = index(calls, "fsync", tmp, after=erasing)
    step = index(calls, "rename", tmp, rewritten, after=step)
    assert index(calls, "fsync", rewritten.parent, after=step) < erased
    removed = root / "source=web" / "date=2024-05-02" / "part-1.parquet"
    step = index(calls, "unlink", removed, after=erasing)
    assert index(calls, "fsync", removed.parent, after=step) < erased


def test_the_warehouse_rewrite_fsyncs_the_copy_before_the_rename_and_the_directory_after(
        tmp_path: Path) -> None:
    calls = trace(tmp_path, """
        from trackd.warehouse.db import Database
        from trackd.warehouse.erase import rewrite

        database = Database(ROOT / "warehouse.duckdb")
        database.open()
        database.writer().execute("CREATE TABLE t AS SELECT range AS n FROM range(1000)")
        mark("rewriting")
        rewrite(database)
        mark("rewritten")
        database.close()
    """)
    root = tmp_path / "root"
    rewriting, rewritten = mark(calls, root, "rewriting"), mark(calls, root, "rewritten")
    path = root / "warehouse.duckdb"
    fresh = root / ".warehouse.duckdb.rewrite"
    step = index(calls, "fsync", fresh, after=rewriting)
    step = index(calls, "rename", fresh, path, after=step)
    assert index(calls, "fsync", root, after=step) < rewritten


def test_a_private_file_is_fsyncd_before_it_replaces_the_old_one(tmp_path: Path) -> None:
    calls = trace(tmp_path, """
        from trackd.private import write_private

        mark("writing")
        write_private(ROOT / "secret", "s3cret")
        mark("written")
    """)
    root = tmp_path / "root"
    writing, written = mark(calls, root, "writing"), mark(calls, root, "written")
    partial = root / ".secret.tmp"
    step = index(calls, "fsync", partial, after=writing)
    assert index(calls, "rename", partial, root / "secret", after=step) < written
