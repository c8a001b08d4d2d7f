"""Options that several commands share (cli.py, cli_jobs.py)."""

from __future__ import annotations

import click

SET_HELP = (
    "Override a field before validation, YAML-typed; repeatable. A grid axis takes a list:"
    " --set grid.model.depth=[2,4]. Setting a field that is a grid axis fixes it to that value."
)
PROFILE_HELP = (
    "Apply the sweep file's profiles.NAME entries first (e.g. cpu: the study at laptop scale),"
    " then --set."
)


TRACKING_URI = click.option(
    "--tracking-uri",
    metavar="URI",
    help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here).",
)


def overrides(func: click.decorators.FC) -> click.decorators.FC:
    func = click.option("--profile", metavar="NAME", help=PROFILE_HELP)(func)
    return click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE", help=SET_HELP)(
        func
    )
