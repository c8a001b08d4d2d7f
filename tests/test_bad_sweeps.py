"""The bad-input corpus: every file in tests/bad_sweeps/ (a sweep file, perhaps with --set
overrides) exits 2 with one line naming the source and the field, no traceback, nothing created.

Each file starts with ``# class:`` (the kind of mistake), ``# expect:`` (text the one line must
contain) and, for overrides, ``# args:`` (a JSON list of extra arguments).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

HERE = Path(__file__).parent / "bad_sweeps"
FILES = sorted(HERE.glob("*.yaml"))
CLASSES = {
    "syntax",
    "yaml tag",
    "unknown key",
    "wrong type",
    "unknown variant",
    "illegal depth",
    "empty grid",
    "bad range",
    "undefined combination",
    "huge grid",
    "override",
    "unsafe name",
}


def header(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        if not line.startswith("# "):
            break
        key, _, value = line[2:].partition(": ")
        found[key] = value
    return found


def test_the_corpus_covers_every_class_with_at_least_40_files() -> None:
    assert len(FILES) >= 40
    classes = [header(f).get("class") for f in FILES]
    assert set(classes) == CLASSES, set(classes) ^ CLASSES
    assert all(header(f).get("expect") for f in FILES)


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_bad_sweep_exits_2_with_one_line_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli, path: Path
) -> None:
    found = header(path)
    args = json.loads(found.get("args", "[]"))
    shutil.copy(path, tmp_path / path.name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ran = cli("sweep", path.name, *args)
    assert ran.code == 2, ran.err
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1, ran.err
    assert "Traceback" not in ran.err
    assert found["expect"] in lines[0], lines[0]
    source = f"--set {args[1]}" if args and args[0] == "--set" else path.name
    assert lines[0].startswith(f"resablate: error: {source}"), lines[0]
    assert os.listdir(tmp_path) == [path.name]  # no mlflow.db, no mlruns, no results folder
