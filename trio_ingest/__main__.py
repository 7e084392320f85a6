"""``python -m trio_ingest`` runs the ``trio-ingest`` command."""

from .cli import main

main()
