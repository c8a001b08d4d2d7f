"""resablate: ablation studies of deep residual networks.

YAML sweep -> validated spec (spec.py) -> expanded trials (grid.py, plan.py)
-> Ray Tune (runner.py) -> one trial: data + model + training (data.py, models/, train.py)
-> MLflow (tracking.py) -> summary.
"""

__version__ = "0.1.0"
