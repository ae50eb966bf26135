"""``python -m verdict``: the same command line as the ``verdict`` script."""

from verdict.gateway.cli import main

main()
