"""resablate: ablation studies of deep residual networks.

A folder per layer, in the order the data flows (README "How the code is laid out"):
YAML -> :mod:`resablate.spec` (read and checked, no torch) -> :mod:`resablate.sweep` (plan,
driver, runner; Ray only in :mod:`resablate.sweep.ray`, Optuna's searches) ->
:mod:`resablate.trial` (one loop over a stack of networks: data, :mod:`resablate.models`,
:mod:`resablate.probes`) -> :mod:`resablate.tracking` (MLflow, only there) ->
:mod:`resablate.analysis` (report, claims); :mod:`resablate.cli` calls them.
"""

__version__ = "0.1.0"
