"""The warehouse seam: where the loader writes and the readers read, DuckDB or PostgreSQL.

Two stores sit behind it, side by side: `DuckStore` (the embedded `<data_dir>/warehouse.duckdb`,
`trackd.warehouse.duckstore`) and `PgStore` (a team's PostgreSQL, `trackd.warehouse.postgres`).
The composition root picks one by `[warehouse] url`; the loader, the query engine, the Profile
API and `events show` talk only to this protocol:

- writing (the loader's thread): `open`, `position`, `find`, `load` (a batch and the new log
  position in ONE transaction) and `settle` (wait for that transaction's COMMIT),
  `record_errors`, `try_load` (the canary, rolled back), `prune`, `load_violations`, `close`;
- reading (any thread): `reading()` gives a `Reader`, a cursor that runs one parameterised
  statement with `?` placeholders and returns rows (the SQL the readers send is written to run
  on both engines).

`load` may return before the COMMIT (`overlap`: how many batches a store may leave committing):
DuckDB commits before it returns; PostgreSQL's transaction runs on a thread of the store while
the loader prepares the next batch (overlap across batches). Either way the loader acknowledges a
batch's records to the log only after `settle` returned for it.

Both stores produce the same tables: PostgreSQL's rows are flattened by the same DuckDB code
(in memory) and then copied, so names, flattening and types cannot drift apart.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from trackd.log.records import Position

if TYPE_CHECKING:
    from trackd.warehouse.batch import Batch
    from trackd.warehouse.catalog import Catalog
    from trackd.warehouse.ledger import Loaded
    from trackd.warehouse.violations import ViolationLoader


class Reader(Protocol):
    """One read cursor: `execute(sql, params)` with `?` placeholders, then fetch."""

    def execute(self, sql: str, params: Any = None, /) -> Reader: ...

    def fetchall(self) -> list[tuple[Any, ...]]: ...

    def fetchone(self) -> tuple[Any, ...] | None: ...


class Readable(Protocol):
    """What the readers (lookup, Profile API) need: a store, or a DuckDB `Database`."""

    @property
    def is_open(self) -> bool: ...

    def reading(self) -> contextlib.AbstractContextManager[Reader]: ...


@runtime_checkable
class Store(Protocol):
    """A warehouse backend. Writes come from one thread per process (the loader's)."""

    kind: str  # "duckdb" or "postgresql"
    catalog: Catalog
    overlap: int  # batches `load` may return before their COMMIT (0: it commits first)

    @property
    def is_open(self) -> bool: ...

    def open(self) -> None:
        """Connect, create trackd's bookkeeping, read the catalog. Raises ConfigError with one
        line when it cannot."""

    def close(self) -> None: ...

    def position(self) -> Position:
        """The log position the committed warehouse contains."""

    def find(self, keys: Iterable[int]) -> dict[int, Loaded]:
        """Ledger entries for these message keys, those of batches not settled included."""

    def load(self, batch: Batch, position: Position) -> int:
        """Write the judged `batch` and `position` in one transaction; returns the rows with
        type conflicts. On failure nothing is kept and the catalog is re-read.

        The COMMIT may come after it returns (see `overlap`): `settle` then says how it went.
        A batch's transaction starts only after the one before it committed; when that one
        failed, nothing of this batch is written either."""

    def settle(self) -> None:
        """Wait for the COMMIT of the oldest batch `load` returned before committing (none:
        return at once); raise what its transaction raised, and then every later batch is
        dropped too (nothing of it written). On failure the catalog is re-read."""

    def try_load(self, batch: Batch) -> None:
        """Write `batch` in a transaction that is rolled back (raises what the write raised)."""

    def record_errors(self, rows: list[tuple[Any, ...]], position: Position) -> None:
        """`_trackd.load_errors` rows and `position` in one transaction."""

    def prune(self, now: datetime) -> None: ...

    def load_violations(self, violations: ViolationLoader) -> int:
        """Move the log's new violations into `<source>._violations`; returns how many."""

    def reading(self) -> contextlib.AbstractContextManager[Reader]:
        """A cursor of its own for one read, safe alongside the writer."""
