"""Options that several commands share (main.py, jobs.py)."""

from __future__ import annotations

from collections.abc import Callable

import click

SET_HELP = (
    "Override a field before validation, YAML-typed; repeatable. A grid axis takes a list:"
    " --set grid.model.depth=[2,4]. Setting a field that is a grid axis fixes it to that value."
)
PROFILE_HELP = (
    "Apply the sweep file's profiles.NAME entries first (e.g. cpu: the study at laptop scale),"
    " then --set."
)


def one_of_new_and_resume(new: bool, resume: bool) -> None:
    """``--new`` and ``--resume`` (sweep, submit) exclude each other."""
    from resablate.errors import UserError

    if new and resume:
        raise UserError("--new starts a new parent run, --resume continues the last one: pick one")


def tracking_uri(
    help: str = "MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here).",
) -> Callable[[click.decorators.FC], click.decorators.FC]:
    """The ``--tracking-uri`` option, with what it means for the command."""
    return click.option("--tracking-uri", metavar="URI", help=help)


TRACKING_URI = tracking_uri()


def overrides(func: click.decorators.FC) -> click.decorators.FC:
    func = click.option("--profile", metavar="NAME", help=PROFILE_HELP)(func)
    return click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE", help=SET_HELP)(
        func
    )


STORAGE = click.option(
    "--storage",
    metavar="PATH|URI",
    help="Where Ray Tune keeps trial folders and checkpoints (its storage_path): on a cluster a"
    " folder every node reaches (NFS), or s3://bucket/path, gs://bucket/path; a retried trial"
    " resumes from there on any node. Default: --results-dir.",
)
