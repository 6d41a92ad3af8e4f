"""The ``datalayer`` command: validate, describe, apply, doctor, quickstart, migrations,
features, serve, skew, evaluate and rollout.

Every error is printed as one message (no traceback) and the exit status is non-zero;
``DATALAYER_DEBUG=1`` shows the traceback of an unexpected internal error.
"""

from __future__ import annotations

from datalayer.cli.core import app
from datalayer.cli.features import features_app
from datalayer.cli.migrations import migrations_app
from datalayer.cli.rollout import rollout_app
from datalayer.cli.serve import serve
from datalayer.cli.skew import evaluate, skew

app.add_typer(migrations_app, name="migrations")
app.add_typer(features_app, name="features")
app.add_typer(rollout_app, name="rollout")
app.command()(serve)
app.command()(skew)
app.command()(evaluate)


def main() -> None:
    app()


__all__ = ["app", "main"]
