"""``python -m fastdeblur`` runs the CLI."""

from fastdeblur.cli.main import main

main()
