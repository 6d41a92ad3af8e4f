"""Alembic environment: the target metadata comes from the registry (see datalayer.migrations)."""

from datalayer.migrations import run_env

run_env()
