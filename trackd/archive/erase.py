"""Privacy deletion in the archive: Parquet files holding a subject's rows are rewritten
without them (atomically, as `files.write_file` writes), or removed when nothing else is left.

A file is read only when its indexed columns or its bytes could hold one of the ids; the rows
that go are those whose user_id or anonymous_id is one of them, or whose stored message
`matches` (an alias' previousId, ids only in the body).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trackd.archive.files import replace_with
from trackd.private import fsync_path


def erase_archive(root: Path, ids: set[str], matches: Callable[[bytes], bool],
                  sources: set[str] | None = None, newer_than: float = 0.0) -> int:
    """Remove the rows of `ids` from every archive file (modified after `newer_than`, a
    time.time()); returns how many rows went."""
    removed = 0
    if not root.is_dir() or not ids:
        return 0
    wanted = pa.array(sorted(ids), pa.string())
    for path in sorted(root.rglob("*.parquet")):
        source = path.parent.parent.name.removeprefix("source=")
        if sources is not None and source not in sources:
            continue
        if newer_than and path.stat().st_mtime <= newer_than:
            continue
        table = pq.read_table(path)
        hit = pc.or_(pc.fill_null(pc.is_in(table["user_id"], wanted), False),
                     pc.fill_null(pc.is_in(table["anonymous_id"], wanted), False))
        bodies = table["body"].to_pylist()
        flags = [bool(h) or (b is not None and matches(b.encode()))
                 for h, b in zip(hit.to_pylist(), bodies, strict=True)]
        count = sum(flags)
        if not count:
            continue
        kept = table.filter(pa.array([not f for f in flags]))
        if kept.num_rows:
            replace_with(path, kept)
        else:
            path.unlink()
            fsync_path(path.parent)
        removed += count
    return removed
