"""The command line teaches: help texts and the field list name every variant."""

from __future__ import annotations

from resablate.spec import registries, trial_paths


def test_fields_lists_every_field_and_every_registered_name(cli) -> None:
    ran = cli("fields")
    assert ran.code == 0
    for path in trial_paths():
        assert path in ran.out
    for registry in registries().values():
        for name in registry.names():
            assert name in ran.out


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
