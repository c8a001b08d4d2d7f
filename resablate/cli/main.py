"""The ``resablate`` command line: the group, its sweep, plan, report and ui commands (probe,
fields and the cluster's commands are in their own modules) and the process's exit; argument
parsing only, each command calls the library.

Every mistake a user can make ends in one line on stderr and exit code 2, before anything starts.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
from pathlib import Path

import click
from rich.console import Console

from resablate import __version__
from resablate.cli.fields import fields
from resablate.cli.jobs import jobs_, logs, stop, submit
from resablate.cli.options import STORAGE, TRACKING_URI, one_of_new_and_resume, overrides
from resablate.cli.printing import next_steps, show_plan, show_report, tell
from resablate.cli.probe import probe
from resablate.errors import UserError
from resablate.sweep.command import RESULTS_DIR, sweep_options

EXAMPLES = """
\b
Examples:
  resablate fields                                 # every field, its default and choices
  resablate plan sweeps/smoke.yaml                 # what would run, no training
  resablate sweep sweeps/smoke.yaml                # run on a local Ray, record in ./mlflow.db
  resablate sweep sweeps/smoke.yaml --set train.epochs=2 --set grid.seed=[0]
  resablate ui                                     # browse the runs in MLflow's UI
  resablate report sweeps/smoke.yaml               # figures and tables from the recorded runs
  resablate submit sweeps/shortcut_depth.yaml --address http://127.0.0.1:8265 --tracking-uri http://mlflow:5000
"""


@click.group(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="resablate")
def cli() -> None:
    """Ablation studies of deep residual networks.

    A sweep file (YAML) names a grid over depth, shortcut, activation placement, normalization,
    initialization and seed; resablate validates it, runs every trial on Ray Tune and records
    each one as a nested MLflow run under the sweep's parent run.
    """


@cli.command()
@click.argument("sweep_file", metavar="SWEEP.yaml")
@overrides
@TRACKING_URI
@click.option(
    "--results-dir",
    default=RESULTS_DIR,
    show_default=True,
    metavar="DIR",
    help="Where Ray Tune keeps its trial folders (DIR/<sweep name>).",
)
@click.option(
    "--inline",
    is_flag=True,
    help="Run trials one by one in this process, without Ray (for debuggers).",
)
@click.option(
    "--address",
    metavar="auto|HOST:PORT",
    help="Run the trials on a running Ray cluster (its GCS address; auto: the one this machine"
    " belongs to) instead of a local Ray. Needs an MLflow server (--tracking-uri http://...).",
)
@click.option(
    "--dashboard",
    is_flag=True,
    help="Start Ray's dashboard too (bound to 127.0.0.1) and print its address.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no table (for scripts).")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the sweep's last run (killed, interrupted or with failed trials): trials"
    " that finished are kept and not run again; a trial cut short goes on in its MLflow run"
    " from its last checkpoint (train.checkpoint_every), the others run, under the same parent"
    " run. With nothing recorded yet, starts the sweep.",
)
@click.option(
    "--yes",
    is_flag=True,
    help="Run a sweep of more than 1000 trials (without it, such a sweep is refused).",
)
@click.option(
    "--force",
    is_flag=True,
    help="With --resume: continue even though the sweep file (or --set) changed since that"
    " run started; the new file is recorded on the parent run.",
)
@click.option(
    "--new",
    is_flag=True,
    help="Run the sweep again as a new parent run although its last run ended (without it,"
    " that rerun is refused: every trial would be recorded twice).",
)
@STORAGE
def sweep(
    sweep_file: str,
    overrides: tuple[str, ...],
    profile: str | None,
    tracking_uri: str | None,
    results_dir: str,
    inline: bool,
    address: str | None,
    dashboard: bool,
    quiet: bool,
    resume: bool,
    yes: bool,
    force: bool,
    new: bool,
    storage: str | None,
) -> int:
    """Run every trial of SWEEP.yaml and record it in MLflow.

    Prints a progress bar while trials run, then the mean ± std over seeds of the final metrics
    of every grid cell. Exits 0 when every trial finished or diverged (divergence is a result),
    1 when a trial failed, 2 on bad input, 130 when interrupted (continue with --resume).
    """
    from resablate.sweep.driver import Options, run_sweep
    from resablate.sweep.end import exit_code, show_outcome
    from resablate.sweep.inventory import prepare_data
    from resablate.sweep.plan import make_plan
    from resablate.sweep.search_grid import check_size

    if force and not resume:
        raise UserError("--force only applies to --resume")
    one_of_new_and_resume(new, resume)
    if address and inline:
        raise UserError("--inline runs the trials in this process; drop it to use --address")
    plan = make_plan(sweep_file, overrides, profile)
    tell(plan.notes)
    check_size(plan, yes)
    if address is not None:  # a cluster reads its data where every node does: refused first
        from resablate.sweep.ray.cluster import check_data_roots

        check_data_roots(plan)
    prepare_data(plan)
    options = Options(
        tracking_uri,
        Path(results_dir).expanduser().absolute(),  # fixed before a cluster job's cwd can move
        inline,
        dashboard,
        quiet,
        resume=resume,
        force=force,
        new=new,
        address=address,
        storage=storage if storage is None or "://" in storage else str(Path(storage).absolute()),
    )
    err = Console(stderr=True, quiet=quiet)
    outcome = run_sweep(plan, options, err.print)
    if not quiet:  # after an interrupted sweep, the --resume that finds it, its checkpoints
        again = sweep_options(profile, overrides, results_dir, storage, address, inline)
        resume_args = again if outcome.interrupted else None
        show_outcome(outcome, plan.spec, next_steps(sweep_file, tracking_uri, resume_args))
    return exit_code(outcome)


@cli.command()
@click.argument("sweep_file", metavar="SWEEP.yaml")
@overrides
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='One JSON object: {"sweep", "n_trials", "trials": [{"id", "config", "params"}]}.',
)
@click.option(
    "--no-data-check",
    is_flag=True,
    help="Do not look for the data sets here (a sweep that runs where they are, e.g. a cluster).",
)
def plan(
    sweep_file: str,
    overrides: tuple[str, ...],
    profile: str | None,
    as_json: bool,
    no_data_check: bool,
) -> int:
    """Validate SWEEP.yaml and list its trials (ids, grid values, parameter counts).

    Nothing is trained and nothing is recorded: use it to check a sweep before running it.
    The data sets its trials read must be here or downloadable (nothing is fetched or created
    to find out); --no-data-check leaves that to the machine the sweep runs on.
    """
    from resablate.sweep.capacity import disk_text, local_resources, slots_in, stack_budget
    from resablate.sweep.inventory import check_data, to_json
    from resablate.sweep.plan import make_plan
    from resablate.sweep.stacking import describe, stacks_text

    chosen = make_plan(sweep_file, overrides, profile)
    tell(chosen.notes)
    if not no_data_check:  # the data the trials read is there, or can be fetched
        try:
            tell(check_data(chosen))
        except UserError as exc:
            raise UserError(f"{exc}; a sweep that runs elsewhere: plan --no-data-check") from None
    found = to_json(chosen)
    slots = slots_in(chosen, local_resources())  # how they stack on this machine's Ray
    found["stacks"] = describe(chosen, slots, stack_budget(chosen, slots))
    if as_json:
        click.echo(json.dumps(found))
    else:
        show_plan(found, disk_text(found["checkpoints"]), stacks_text(found["stacks"]))
    return 0


@cli.command()
@click.argument("sweep_file", metavar="[SWEEP.yaml]", required=False)
@click.option("--experiment", metavar="NAME", help="The MLflow experiment (default: the sweep's).")
@click.option(
    "--run", "run_id", metavar="PARENT_ID", help="A sweep's parent run (default: the latest)."
)
@click.option(
    "--out",
    metavar="DIR",
    help="Where the figures and tables go (default: reports/<experiment>).",
)
@TRACKING_URI
@click.option("--no-log", is_flag=True, help="Do not log the files to the sweep's parent run.")
@click.option(
    "--check",
    is_flag=True,
    help="Exit 1 when a claim is contradicted: the study as a regression test of the science.",
)
def report(
    sweep_file: str | None,
    experiment: str | None,
    run_id: str | None,
    out: str | None,
    tracking_uri: str | None,
    no_log: bool,
    check: bool,
) -> int:
    """Draw a recorded sweep's figures (PNG) and tables (CSV, markdown) from MLflow.

    \b
    degradation.png/.csv     final train and test error against depth, mean ± std over seeds
    learning_curves.png      train loss and test accuracy per epoch, per configuration
    signal_propagation.png   forward / backward variance per unit at init (spp probe)
    best_over_lr.md/.csv/.png  best final train loss over a train.lr axis, per configuration
    hessian.png/.csv         condition number and index at init against depth (hessian probe)
    hessian_training.png/.csv  index and max |λ| over epochs (hessian probe with every: k)
    weight_norms.png         weight norms over epochs (weights probe)
    lesion.png/.csv          test error against k units removed, each unit removed alone
    shattered.png, search.png/.csv (Optuna: searched value against the objective)
    summary.md/.csv          mean ± std and median of the final metrics per cell, best c
    comparisons.md/.csv      each configuration against the reference (report.reference):
                             difference, 95% interval (t below 10 seeds, bootstrap from
                             10), paired or Welch t, Holm's p, P(a beats b)
    claims.md/.csv           the sweep's claims: holds, contradicted, inconclusive or not
                             measured, with the numbers; printed first, and each verdict
                             logged to the parent run (tag and metric claim.<id>)

    The claims and report.reference are the sweep file's when SWEEP.yaml is given (edit them
    and report again, no rerun needed), else those recorded with the sweep.

    Only what the sweep recorded is drawn; report.md names what was not and why. The files are
    also logged to the sweep's parent run (artifacts report/...), next to its runs in the UI.
    """
    from resablate.analysis.report import report_sweep
    from resablate.analysis.verdicts import CONTRADICTED

    sweep, folder, done, verdicts = report_sweep(
        sweep_file, experiment, run_id, out, tracking_uri, log=not no_log
    )
    show_report(sweep, folder, done, logged=not no_log)
    contradicted = [v.claim.id for v in verdicts if v.verdict == CONTRADICTED]
    if check and contradicted:
        click.echo(f"contradicted: {', '.join(contradicted)}", err=True)
        return 1
    return 0


@cli.command()
@TRACKING_URI
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to bind; anything but 127.0.0.1 exposes your runs to the network.",
)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
def ui(tracking_uri: str | None, host: str, port: int) -> int:
    """Start the MLflow UI on this machine's store and print its address.

    Each sweep is an experiment; its parent run holds the sweep file and the summary table, and
    one child run per trial holds the trial's params (model.depth, init.c, ...) and its
    per-epoch metrics. Stop with Ctrl-C.
    """
    from resablate.tracking.store import resolve_uri
    from resablate.tracking.ui import serve_ui

    return serve_ui(resolve_uri(tracking_uri), host, port, click.echo)


for command in (probe, fields, submit, jobs_, logs, stop):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Run a command; a sweep handles its stop signals itself (stop.py: Ctrl-C, SIGTERM and
    SIGUSR1 stop its trials, mark their runs killed and leave it resumable)."""
    from resablate.sweep.stop import Stopped

    try:
        code = cli.main(args=argv, prog_name="resablate", standalone_mode=False)
    except UserError as exc:
        click.echo(f"resablate: error: {exc}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt, Stopped):
        click.echo(
            "resablate: interrupted; what was recorded is kept, continue with --resume", err=True
        )
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def run() -> None:
    """The ``resablate`` command (and ``python -m resablate``): :func:`main`, then every exit
    handler, then the process ends without Python's teardown of modules (:func:`_end_now`)."""
    code: list[int] = []
    # registered before main() imports torch, Ray or MLflow: atexit runs it after their handlers
    atexit.register(_end_now, code)
    try:
        main()
    except SystemExit as exc:
        code.append(exc.code if isinstance(exc.code, int) else int(exc.code is not None))
        raise


def _end_now(code: list[int]) -> None:
    """The last exit handler: threads were joined and every other handler ran (logging's
    flush, Ray's shutdown, MLflow's, temporary folders' removal); flush the output and end."""
    if not code:  # an uncaught error: Python's own exit
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    # os._exit: tearing down torch's, Ray's and MLflow's modules takes 1-3 s, and nothing needs it
    os._exit(code[0])


if __name__ == "__main__":
    run()
