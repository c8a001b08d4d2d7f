"""The command line teaches: help texts and the field list name every variant."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from resablate.spec.catalog import registries
from resablate.spec.fields import trial_paths

ROOT = Path(__file__).resolve().parents[1]


def test_fields_lists_every_field_and_every_registered_name(cli) -> None:
    ran = cli("fields")
    assert ran.code == 0
    for path in trial_paths():
        assert path in ran.out
    for registry in registries().values():
        for name in registry.names():
            assert name in ran.out


def test_fields_says_what_each_field_means_and_each_familys_default(cli) -> None:
    from resablate.spec.field_help import HELP

    assert set(HELP) == set(trial_paths())  # one line for every field, none for a stale one
    out = cli("fields").out
    text = " ".join(out.split())
    for path in trial_paths():
        assert " ".join(HELP[path].split()) in text, path
    # a family's own default beside the schema's: cifar nets are post-activation, batch-normed
    assert 'default mlp "mid", mnist "post", cifar "post", imagenet "post"' in text
    assert 'default mlp "none", mnist "batch", cifar "batch", imagenet "batch"' in text
    assert "default mlp 4, mnist 25, cifar 20, imagenet 18" in text
    assert "default mnist 16, cifar 16, imagenet 64; the others null" in text


def test_help_names_the_commands_and_examples(cli) -> None:
    ran = cli("--help")
    assert ran.code == 0
    for word in ("sweep", "plan", "ui", "fields", "resablate sweep sweeps/smoke.yaml"):
        assert word in ran.out
    sweep_help = cli("sweep", "--help").out
    for option in ("--set", "--tracking-uri", "--results-dir", "--quiet", "--inline"):
        assert option in sweep_help


def test_unknown_command_is_a_usage_error(cli) -> None:
    ran = cli("swep")
    assert ran.code == 2 and "No such command 'swep'" in ran.err


@pytest.mark.slow  # real processes, each importing the whole stack
def test_the_command_ends_fast_yet_prints_everything_and_keeps_its_exit_code(
    cli, tmp_path: Path
) -> None:
    """`resablate` and `python -m resablate` skip Python's module teardown (cli.run): what they
    print is still all there, on a pipe too, and exit codes are main's."""
    smoke = str(ROOT / "sweeps" / "smoke.yaml")
    expected = cli("fields").out
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # a pipe's way
    run = functools.partial(subprocess.run, capture_output=True, text=True, env=buffered)
    for command in ([sys.executable, "-m", "resablate"], [shutil.which("resablate") or ""]):
        done = run([*command, "fields"], cwd=tmp_path)
        assert done.returncode == 0 and done.stdout == expected
        planned = run([*command, "plan", smoke])
        assert planned.returncode == 0 and "trial" in planned.stdout
        assert planned.stdout == cli("plan", smoke).out
        missing = run([*command, "plan", "nope.yaml"])
        assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
