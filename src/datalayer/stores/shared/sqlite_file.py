"""One SQLite file shared by the embedded stores: WAL mode, a busy timeout, explicit writes.

Each write runs in ``BEGIN IMMEDIATE`` so writers from several processes queue on the file lock
instead of failing, and a failed write leaves nothing behind.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from datalayer.errors import NotApplied, StoreLabel, StoreUnavailable
from datalayer.stores.base import classified


class SQLiteFile:
    def __init__(self, path: Path, label: StoreLabel, busy_timeout: float = 30.0) -> None:
        self.path = path
        self.label = label
        self.busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                str(self.path),
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            self._wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        return self._conn

    def _wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL. Connections that open a new file at once may find it
        locked while another one switches it, and SQLite answers that at once, without its
        busy timeout: retried, for as long as the timeout."""
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    conn.close()
                    raise
                time.sleep(0.01)

    @contextmanager
    def errors(self) -> Iterator[None]:
        """SQLite's errors as datalayer's: a missing table (a collection never applied) is
        ``NotApplied``, other operational errors (a locked file) ``StoreUnavailable``."""
        try:
            with classified(self.label, (sqlite3.OperationalError,), (sqlite3.DatabaseError,)):
                yield
        except StoreUnavailable as exc:
            if isinstance(exc.orig, sqlite3.OperationalError) and str(exc.orig).startswith(
                "no such table"
            ):
                raise NotApplied(
                    f"{self.label}: {exc.orig}; run 'datalayer apply'", store=self.label.name
                ) from exc.orig
            raise

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self.errors():
            yield self._connection()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        with self._lock, self.errors():
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def ping(self) -> None:
        """One real read of the file: what each embedded store's ``ping`` is."""
        with self.read() as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
