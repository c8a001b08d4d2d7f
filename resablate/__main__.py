"""``python -m resablate``: the same as the ``resablate`` command."""

from resablate.cli.main import run

run()
