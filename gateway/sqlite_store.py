"""What the gateway's SQLite-backed stores share: one connection, opened by the store, and a
clear error when used before it is opened or after it is closed."""

from __future__ import annotations

import sqlite3


class SqliteStore:
    """A store owning one SQLite connection (`open` is the store's own: pragmas differ)."""

    _what = "the store"
    _db: sqlite3.Connection | None = None

    def close(self) -> None:
        """Close the database (the store can be opened again)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        """The open connection."""
        if self._db is None:
            raise RuntimeError(f"{self._what} is not open")
        return self._db
