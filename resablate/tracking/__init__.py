"""MLflow, and only here: the store (retried), the writer of a sweep's runs, the reader that
resume and report use, the MLflow UI."""
