"""The commands of a sweep on a Ray cluster: submit, jobs, logs, stop (Ray's Jobs API)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from resablate.cli.options import STORAGE, one_of_new_and_resume, overrides, tracking_uri

JOBS_ADDRESS = click.option(
    "--address",
    required=True,
    metavar="http://HEAD:8265",
    envvar="RAY_API_SERVER_ADDRESS",
    help="The cluster's Jobs API (its dashboard; tunnel to it): RAY_API_SERVER_ADDRESS.",
)


@click.command()
@click.argument("sweep_file", metavar="SWEEP.yaml")
@overrides
@JOBS_ADDRESS
@tracking_uri("The MLflow server the cluster records to (default: MLFLOW_TRACKING_URI).")
@click.option("--yes", is_flag=True, help="Allow a sweep of more than 1000 trials.")
@click.option(
    "--resume", is_flag=True, help="The job continues the sweep's last run (sweep --resume)."
)
@click.option(
    "--new", is_flag=True, help="The job runs a sweep that ran to its end again (sweep --new)."
)
@STORAGE
def submit(
    sweep_file: str,
    overrides: tuple[str, ...],
    profile: str | None,
    address: str,
    tracking_uri: str | None,
    yes: bool,
    resume: bool,
    new: bool,
    storage: str | None,
) -> int:
    """Submit SWEEP.yaml to a Ray cluster as a Ray Job; print its id.

    The sweep is validated here first. The job runs `resablate sweep` on the cluster with this
    folder as its working directory and records to an MLflow server every node reaches (a sqlite
    store is refused). Follow it with `resablate logs ID --follow`; `resablate jobs` lists jobs.
    """
    from resablate.sweep.driver import Options, check_rerun
    from resablate.sweep.plan import make_plan
    from resablate.sweep.ray import jobs
    from resablate.sweep.search_grid import check_size
    from resablate.tracking.store import check_cluster_store, resolve_uri

    one_of_new_and_resume(new, resume)
    plan = make_plan(sweep_file, overrides, profile)
    check_size(plan, yes)
    uri = resolve_uri(tracking_uri, plan.spec.tracking.uri)
    check_cluster_store(uri)
    check_rerun(plan, uri, Options(resume=resume, new=new))  # refused here, not in the job
    flags = ("--resume",) * resume + ("--new",) * new
    job = jobs.submit(address, plan, uri, profile, Path.cwd(), yes, storage, flags)
    click.echo(job)
    click.echo(f"follow it: resablate logs {job} --address {address} --follow", err=True)
    return 0


@click.command("jobs")
@JOBS_ADDRESS
def jobs_(address: str) -> int:
    """List the cluster's Ray Jobs, newest first (id, status, command)."""
    from resablate.sweep.ray import jobs

    shown = Table(title=f"jobs at {address}", title_justify="left")
    shown.add_column("id", no_wrap=True)
    shown.add_column("status", no_wrap=True)
    shown.add_column("entrypoint")
    for row in jobs.listing(address):
        shown.add_row(row["id"], row["status"], row["entrypoint"])
    (Console() if sys.stdout.isatty() else Console(width=160)).print(shown)
    return 0


@click.command()
@click.argument("job_id", metavar="ID")
@JOBS_ADDRESS
@click.option("-f", "--follow", is_flag=True, help="Stream the logs until the job ends.")
def logs(job_id: str, address: str, follow: bool) -> int:
    """Print a job's logs; with --follow, until it ends (exit 0 when it succeeded, else 1)."""
    from resablate.sweep.ray import jobs

    status = jobs.logs(address, job_id, follow, lambda text: click.echo(text, nl=False))
    click.echo(f"job {job_id}: {status}", err=True)
    return 0 if status in ("SUCCEEDED", "RUNNING", "PENDING") else 1


@click.command()
@click.argument("job_id", metavar="ID")
@JOBS_ADDRESS
def stop(job_id: str, address: str) -> int:
    """Stop a running job (its sweep stops like on Ctrl-C; continue it later with --resume)."""
    from resablate.sweep.ray import jobs

    stopped = jobs.stop(address, job_id)
    click.echo(f"job {job_id}: {'stopping' if stopped else 'had already ended'}")
    return 0
