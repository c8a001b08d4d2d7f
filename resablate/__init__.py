"""resablate: ablation studies of deep residual networks.

YAML sweep -> loader.py (profiles, --set) -> schema (spec.py, options.py) checked against the
registries (catalog.py) -> expanded trials (grid.py, plan.py) -> driver.py (stop.py: one stop
path) -> runner.py: inline, or Ray Tune (tuning.py, cluster.py) running stacks of trials
(stacking.py) and a search's candidates (search.py) -> one loop over a stack of networks
(train.py, batched.py: data.py, models/, probes/) -> MLflow (runlog.py writes, ledger.py reads,
store.py) -> summary, report.
"""

__version__ = "0.1.0"
