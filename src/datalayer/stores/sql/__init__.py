"""Transactional stores on SQLAlchemy: SQLite and PostgreSQL."""
