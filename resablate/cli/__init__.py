"""The ``resablate`` command: argument parsing and printing; each command calls the layers."""
