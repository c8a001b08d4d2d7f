"""The ``resablate`` command line: argument parsing only; each subcommand calls the library.

Every mistake a user can make ends in one line on stderr and exit code 2, before anything starts.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shlex
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from resablate import __version__
from resablate.cli.jobs import jobs_, logs, stop, submit
from resablate.cli.options import STORAGE, TRACKING_URI, one_of_new_and_resume, overrides
from resablate.errors import UserError

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


def tell(notes: Sequence[str]) -> None:
    """What the user should know that stops nothing, one line each on stderr."""
    for note in notes:
        click.echo(f"resablate: {note}", err=True)


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
    default="resablate-runs",
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
    spec = plan.spec
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
    if not quiet:
        again = [  # what makes --resume find the same sweep, its checkpoints and cluster
            *(["--profile", profile] if profile else []),
            *(a for o in overrides for a in ("--set", o)),
            *(["--results-dir", results_dir] if results_dir != "resablate-runs" else []),
            *(["--storage", storage] if storage else []),
            *(["--address", address] if address else []),
            *(["--inline"] if inline else []),
        ]
        resume_args = again if outcome.interrupted else None
        show_outcome(outcome, spec, next_steps(sweep_file, tracking_uri, resume_args))
    return exit_code(outcome)


def next_steps(
    sweep_file: str, tracking_uri: str | None, resume: list[str] | None = None
) -> list[str]:
    """What a researcher runs after a sweep: the report first, then the MLflow UI; after an
    interrupted one, first the --resume with the sweep's own ``resume`` options."""
    where = f" --tracking-uri {shlex.quote(tracking_uri)}" if tracking_uri else ""
    file = shlex.quote(sweep_file)
    if resume is not None:
        options = "".join(f" {shlex.quote(a)}" for a in resume)
        first = f"resablate sweep {file}{options}{where} --resume   # the trials left"
        return [first, *next_steps(sweep_file, tracking_uri)]
    return [
        f"resablate report {shlex.quote(sweep_file)}{where}   # figures, tables, the claims",
        f"resablate ui{where}   # the runs in MLflow's UI",
    ]


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
        return 0
    shown = Table(title=f"{found['sweep']}: {found['n_trials']} trials", title_justify="left")
    for column in ("#", "id", "grid", "params"):
        shown.add_column(column, justify="right" if column in ("#", "params") else "left")
    for i, trial in enumerate(found["trials"][:200]):
        values = " ".join(f"{k}={v}" for k, v in trial["grid"].items()) or "(no grid)"
        shown.add_row(str(i), trial["id"], values, f"{trial['params']:,}")
    console = Console()
    console.print(shown)
    if found["n_trials"] > 200:
        console.print(f"... and {found['n_trials'] - 200} more (use --json for all)")
    if "search" in found:
        size = found["search"]
        outside = size["unsearched_trials"]
        console.print(
            f"search over {size['param']}: {size['cells']} cells ×"
            f" {size['candidates_per_cell']} candidates × {size['seeds']} seeds"
            + (f" + {outside} grid trials outside search.where" if outside else "")
            + f" = {size['total_trials']} trials"
        )
    click.echo(disk_text(found["checkpoints"]))
    click.echo(stacks_text(found["stacks"]))
    return 0


@cli.command()
@click.argument("sweep_file", metavar="SWEEP.yaml")
@overrides
@click.option(
    "--trial",
    "trial_ids",
    multiple=True,
    metavar="ID",
    help="Probe only this trial (an id from `resablate plan`); repeatable.",
)
@click.option(
    "--epochs",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Train this many epochs of the trial's recipe first (0: at initialization).",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    metavar="auto|cpu|cuda[:N]",
    help="Where to compute; auto: a GPU when the sweep's trials ask for one (resources.gpu)"
    " and this machine has one, else the CPU.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object (the stable contract).")
def probe(
    sweep_file: str,
    overrides: tuple[str, ...],
    profile: str | None,
    trial_ids: tuple[str, ...],
    epochs: int,
    device: str,
    as_json: bool,
) -> int:
    """Run the probes of SWEEP.yaml's `probes:` section on its trials, in this process.

    No Ray and no MLflow: a quick look at signal propagation, the Hessian spectrum, weight
    norms, shattered gradients or lesions at initialization (or after --epochs of training).
    --json prints {"sweep", "trials": [{"id", "config", "params", "<probe>": {...}}]}.
    """
    import torch

    from resablate.sweep.inventory import params, prepare_data
    from resablate.sweep.plan import make_plan
    from resablate.trial.compute import choose_device
    from resablate.trial.train import probe_trial

    plan = make_plan(sweep_file, overrides, profile)
    tell(plan.notes)
    where = choose_device(device, plan.spec.resources.gpu, torch.cuda.device_count())
    if not plan.spec.probes.chosen():
        raise plan.error(
            "probes",
            "no probe chosen; add e.g. probes: {spp: {}, hessian: {}}"
            " to the sweep, or --set probes.spp={}",
        )
    known = {t.id: t for t in plan.trials}
    for trial_id in trial_ids:
        if trial_id not in known:
            raise UserError(
                f"--trial {trial_id}: no such trial in {sweep_file};"
                " `resablate plan` lists the ids"
            )
    chosen = [known[i] for i in trial_ids] if trial_ids else plan.trials
    prepare_data(plan)
    trials: list[dict[str, Any]] = []
    for trial in chosen:
        found = probe_trial(trial.config, plan.spec.probes, epochs, device=where)
        trials.append({"id": trial.id, "config": trial.config, "params": params(trial), **found})
    out = {"sweep": plan.spec.name, "trials": trials}
    if as_json:
        click.echo(json.dumps(out))
        return 0
    shown = Table(
        title=f"{plan.spec.name}: probes at "
        f"{'initialization' if not epochs else f'epoch {epochs}'}",
        title_justify="left",
    )
    for column in ("id", "grid", "probe", "results"):
        shown.add_column(column)
    for trial, entry in zip(chosen, trials, strict=True):
        for name in plan.spec.probes.chosen():
            shown.add_row(trial.id, trial.label() or "(no grid)", name, _brief(entry[name]))
    Console().print(shown)
    return 0


def _brief(found: dict) -> str:
    """Scalars as numbers, curves as their first and last values."""
    parts = []
    for key, value in found.items():
        if isinstance(value, list) and value and isinstance(value[0], (int, float)):
            parts.append(f"{key}: {value[0]:.3g} … {value[-1]:.3g} ({len(value)})")
        elif isinstance(value, (int, float)):
            parts.append(f"{key}: {value:.4g}")
        elif isinstance(value, str):
            parts.append(f"{key}: {value}")
    return "\n".join(parts)


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
    from resablate.analysis.claims_table import logged
    from resablate.analysis.report import HISTORIES, HISTORY_PREFIXES, make_report
    from resablate.analysis.verdicts import CONTRADICTED
    from resablate.spec.loader import load_sweep
    from resablate.tracking.ledger import log_report, read_sweep
    from resablate.tracking.store import resolve_uri

    spec_uri, claimed, reference = None, None, None
    if sweep_file is not None:
        spec = load_sweep(sweep_file)
        experiment = experiment or spec.tracking.experiment or spec.name
        spec_uri, claimed = spec.tracking.uri, list(spec.claims)
        reference = dict(spec.report.reference)
    if experiment is None:
        raise UserError("name the sweep: resablate report SWEEP.yaml, or --experiment NAME")
    sweep = read_sweep(
        resolve_uri(tracking_uri, spec_uri), experiment, run_id, HISTORIES, HISTORY_PREFIXES
    )
    folder = Path(out) if out else Path("reports") / experiment
    done, verdicts = make_report(sweep, folder, claimed, reference)
    if not no_log:
        log_report(sweep, folder, *logged(verdicts))
    for line in done.claims:
        click.echo(line)
    for name in done.drawn:
        click.echo(str(folder / name))
    for name, why in done.skipped:
        click.echo(f"not drawn: {name} ({why})", err=True)
    where = "" if no_log else f"; logged to parent run {sweep.parent.run_id} (artifacts report/)"
    click.echo(f"report of {len(sweep.runs)} runs in {folder / 'report.md'}{where}", err=True)
    contradicted = [v.claim.id for v in verdicts if v.verdict == CONTRADICTED]
    if check and contradicted:
        click.echo(f"contradicted: {', '.join(contradicted)}", err=True)
        return 1
    return 0


@cli.command()
def fields() -> int:
    """List every field of a trial's config: what it means, its default and its legal values.

    Any of them can be set in a sweep file's sections, overridden with --set, and swept as a
    grid axis by its dotted path (grid: {model.depth: [2, 4, 8]}). A model field a family sets
    itself shows each family's default (mlp, mnist, cifar, imagenet: basic units).
    """
    from resablate.spec.catalog import describe

    out = Console(highlight=False)
    width = min(out.width, 100)

    def wrapped(text: str, indent: str) -> str:
        lines = textwrap.wrap(
            text,
            width,
            initial_indent=indent,
            subsequent_indent=indent + "  ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        return "\n".join(lines)

    out.print("Trial config fields (the sweep sections seed, model, init, data, train)\n")
    section = None
    for field in describe():
        if field.path.partition(".")[0] != section and "." in field.path:
            section = field.path.partition(".")[0]
            out.print(f"\n[bold]{section}[/bold]")
        out.print(f"[bold cyan]{field.path}[/bold cyan]")
        out.print(escape(wrapped(field.help, "    ")))
        out.print(escape(wrapped(f"default {field.shown_default()}", "    ")))
        out.print(escape(wrapped(f"values  {field.legal}", "    ")))
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


for command in (submit, jobs_, logs, stop):
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
    """The ``resablate`` command (and ``python -m resablate``): :func:`main`, then the process
    ends without Python's teardown of torch's, Ray's and MLflow's modules (about 2 s on a small
    machine, for nothing). Exit handlers run and output is flushed first; by then every file
    and run has been closed."""
    try:
        main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if code is not None and not isinstance(code, int):  # sys.exit("message")
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()  # what Python runs at exit (logging's flush, Ray's, weakref's)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    run()
