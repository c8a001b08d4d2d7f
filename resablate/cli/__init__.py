"""The ``resablate`` command: argument parsing and printing; each command calls the layers.

``run`` is here too: the console script of an install made before the command moved into this
package names ``resablate.cli:run``."""

from resablate.cli.main import run

__all__ = ["run"]
