"""``datalayer serve``: the feature server over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from datalayer.cli.render import ConfigOption, ProfileOption, reports_errors


@reports_errors
def serve(
    config: ConfigOption = None,
    profile: ProfileOption = None,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 6566,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    insecure: Annotated[
        bool, typer.Option(help="Allow a non-loopback address without tokens.")
    ] = False,
    certfile: Annotated[Path | None, typer.Option(help="TLS certificate (PEM).")] = None,
    keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    access_log: Annotated[bool, typer.Option(help="One JSON line per request on stderr.")] = True,
) -> None:
    """Serve the registry's feature patterns over HTTP to model services."""
    from datalayer.serve import run

    run(
        config,
        profile,
        host=host,
        port=port,
        workers=workers,
        insecure=insecure,
        certfile=certfile,
        keyfile=keyfile,
        access_log=access_log,
    )
