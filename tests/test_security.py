"""Security by default: safe YAML, safe checkpoints, nothing secret recorded, folders that
cannot be escaped or are impossible refused in one line before anything is recorded."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_process, write

SECRET = "resablate-secret-7f3a9c"


def calls(source: Path) -> list[ast.Call]:
    return [n for n in ast.walk(ast.parse(source.read_text())) if isinstance(n, ast.Call)]


def test_no_unsafe_deserialization_anywhere_in_the_package() -> None:
    for path in (ROOT / "resablate").rglob("*.py"):
        for call in calls(path):
            name = ast.unparse(call.func)
            assert name not in ("yaml.load", "yaml.unsafe_load", "pickle.load", "pickle.loads")
            # no YAML loader passed or built (yaml.load(..., Loader=...), yaml.UnsafeLoader(...))
            assert all(k.arg != "Loader" for k in call.keywords), (path, ast.unparse(call))
            assert not (name.startswith("yaml.") and "Loader" in name), (path, name)
            if name == "torch.load":
                keywords = {k.arg: ast.unparse(k.value) for k in call.keywords}
                assert keywords.get("weights_only") == "True", path


@pytest.mark.slow  # a whole sweep
@pytest.mark.usefixtures("store_uri")  # a copy of an empty store: see conftest
def test_no_secret_from_the_environment_reaches_mlflow(tmp_path: Path) -> None:
    sweep = write(
        tmp_path / "s.yaml",
        "name: secretive\nmodel: {depth: 2, width: 8}\ntrain: {epochs: 1}\n",
    )
    env = {"AWS_SECRET_ACCESS_KEY": SECRET, "MY_API_TOKEN": SECRET, "DATABASE_URL": SECRET}
    ran = run_process("sweep", str(sweep), "--inline", "-q", cwd=tmp_path, env=env)
    assert ran.code == 0, ran.err
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("secretive")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2  # the parent and its one trial
    for run in runs:
        for found in (run.data.params, run.data.tags):
            assert SECRET not in repr(found)
    for path in (tmp_path / "mlruns").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET.encode() not in (tmp_path / "mlflow.db").read_bytes()


def test_an_impossible_results_folder_is_one_line_and_records_nothing(tmp_path: Path) -> None:
    sweep = write(tmp_path / "s.yaml", "name: nowhere\nmodel: {depth: 2, width: 8}\n")
    write(tmp_path / "file", "a file, not a folder")
    for args in (["--results-dir", str(tmp_path / "file" / "runs")],):
        ran = run_process("sweep", str(sweep), "--inline", *args, cwd=tmp_path)
        assert ran.code == 2, ran.err
        assert ran.err.count("\n") == 1 and "results folder" in ran.err, ran.err
        assert "--results-dir" in ran.err
    assert sorted(os.listdir(tmp_path)) == ["file", "s.yaml"]  # no mlflow.db, no runs


def test_an_impossible_tracking_folder_is_one_line(tmp_path: Path) -> None:
    sweep = write(tmp_path / "s.yaml", "name: nowhere\nmodel: {depth: 2, width: 8}\n")
    uri = f"sqlite:///{tmp_path / 'missing' / 'mlflow.db'}"
    ran = run_process("sweep", str(sweep), "--inline", "--tracking-uri", uri, cwd=tmp_path)
    assert ran.code == 2 and ran.err.count("\n") == 1, ran.err
    assert "does not exist or is not writable" in ran.err
    assert sorted(os.listdir(tmp_path)) == ["s.yaml"]
