"""``python -m datalayer.cli``: the same as the ``datalayer`` command."""

from datalayer.cli import main

main()
