"""Document stores: MongoDB and embedded SQLite JSON."""
