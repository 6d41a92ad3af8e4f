"""One PostgreSQL URL, spelled for each client that takes it."""

from __future__ import annotations


def sqlalchemy_url(url: str) -> str:
    """A ``postgres[ql][+psycopg]://`` URL as SQLAlchemy's psycopg 3 URL."""
    return "postgresql+psycopg://" + url.split("://", 1)[1]


def libpq_url(url: str) -> str:
    """The same URL as psycopg itself takes (``postgresql://``)."""
    return "postgresql://" + url.split("://", 1)[1]
