"""``python -m resablate.cli``: the same as the ``resablate`` command."""

from resablate.cli.main import run

run()
