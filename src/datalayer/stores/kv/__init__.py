"""Key-value stores: Redis and an embedded SQLite table with expiry."""
