"""One sweep invocation: the plan, the driver (lock, resume, parent run), the runner (inline or
Ray Tune), stacks and Optuna searches. Ray is imported only under :mod:`resablate.sweep.ray`."""
