"""``resablate probe``: the sweep's probes on its trials, in this process, without Ray or MLflow
(at initialization, or after a few epochs of each trial's recipe)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from resablate.errors import UserError
from resablate.spec.grid import Trial
from resablate.sweep.inventory import params, prepare_data
from resablate.sweep.plan import Plan


def probe_plan(
    plan: Plan, trial_ids: Sequence[str], epochs: int, device: str
) -> list[tuple[Trial, dict[str, Any]]]:
    """The ``trial_ids`` (every trial when none) each with what ``probe --json`` prints of it:
    id, config, parameter count and one entry per chosen probe. ``device``: auto, cpu, cuda[:N]."""
    import torch

    from resablate.trial.compute import choose_device
    from resablate.trial.train import probe_trial

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
                f"--trial {trial_id}: no such trial in {plan.source};"
                " `resablate plan` lists the ids"
            )
    chosen = [known[i] for i in trial_ids] if trial_ids else plan.trials
    prepare_data(plan)
    probed = []
    for trial in chosen:
        found = probe_trial(trial.config, plan.spec.probes, epochs, device=where)
        entry = {"id": trial.id, "config": trial.config, "params": params(trial), **found}
        probed.append((trial, entry))
    return probed
