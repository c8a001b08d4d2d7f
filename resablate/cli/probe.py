"""``resablate probe``: a sweep's probes on its trials in this process, and their table."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from resablate.cli.options import overrides
from resablate.cli.printing import tell

if TYPE_CHECKING:
    from resablate.spec.grid import Trial


@click.command()
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
    from resablate.sweep.plan import make_plan
    from resablate.sweep.probe import probe_plan

    plan = make_plan(sweep_file, overrides, profile)
    tell(plan.notes)
    probed = probe_plan(plan, trial_ids, epochs, device)
    if as_json:
        click.echo(json.dumps({"sweep": plan.spec.name, "trials": [e for _, e in probed]}))
    else:
        show_probes(plan.spec.name, epochs, plan.spec.probes.chosen(), probed)
    return 0


def show_probes(
    sweep: str, epochs: int, probes: Collection[str], probed: list[tuple[Trial, dict[str, Any]]]
) -> None:
    """One row per trial and probe: the probe's scalars, and its curves' ends."""
    shown = Table(
        title=f"{sweep}: probes at {'initialization' if not epochs else f'epoch {epochs}'}",
        title_justify="left",
    )
    for column in ("id", "grid", "probe", "results"):
        shown.add_column(column)
    for trial, entry in probed:
        for name in probes:
            shown.add_row(trial.id, trial.label() or "(no grid)", name, _brief(entry[name]))
    Console().print(shown)


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
