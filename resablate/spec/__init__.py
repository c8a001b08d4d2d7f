"""The sweep file read and checked: YAML, profiles and ``--set`` -> a validated spec and its
grid of trials. Data only: no torch, Ray or MLflow (``catalog`` reaches the registries of
:mod:`resablate.models` on first use)."""
