"""`resablate report` on small recorded sweeps: files, numbers equal to MLflow's, artifacts."""

from __future__ import annotations

import csv
import shutil
import statistics
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import trial_runs, write

SWEEP = """
name: reported
model: {family: mlp, width: 16, norm: none}
init: {c: 0.25}
train: {epochs: 3, batch_size: 128, lr: 0.05}
probes: {spp: {at: [init]}, weights: {every: 1}, lesion: {at: [end]}}
grid:
  model.depth: [2, 4]
  model.shortcut: [identity, none]
  seed: [0, 1]
"""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, migrated_db: Path) -> Path:
    """A finished 8-trial sweep in its own folder's default store."""
    from resablate.cli.main import main

    folder = tmp_path_factory.mktemp("reported")
    shutil.copy(migrated_db, folder / "mlflow.db")  # an empty store (conftest.migrated_db)
    write(folder / "r.yaml", SWEEP)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        with pytest.raises(SystemExit) as ended:
            main(["sweep", "r.yaml", "--inline", "-q"])
    assert ended.value.code == 0
    return folder


def configuration(run: Any) -> str:
    return f"depth={run.data.params['model.depth']} shortcut={run.data.params['model.shortcut']}"


def over_seeds(runs: list[Any], run: Any, metric: str) -> list[float]:
    """``metric`` of every run of ``run``'s configuration: its seeds."""
    return [r.data.metrics[metric] for r in runs if configuration(r) == configuration(run)]


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_report_draws_what_was_recorded_and_its_numbers_are_mlflows(
    recorded: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(recorded)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ran = cli("report", "r.yaml", "--out", "out")
    assert ran.code == 0, ran.err
    out = recorded / "out"
    drawn = ["degradation.png", "learning_curves.png", "signal_propagation.png"]
    drawn += ["weight_norms.png", "lesion.png"]
    for name in drawn:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert str(Path("out") / name) in ran.out
    for name in ("hessian.png", "shattered.png", "search.png"):
        assert not (out / name).exists()
    assert "not drawn: hessian.png (no hessian probe recorded)" in ran.err
    assert "- search.png: the sweep has no search" in (out / "report.md").read_text()

    client, runs = trial_runs(recorded, "reported")
    errors: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        key = (f"shortcut={run.data.params['model.shortcut']}", run.data.params["model.depth"])
        errors.setdefault(key, []).append(1 - run.data.metrics["test_acc"])
    table = rows(out / "degradation.csv")
    assert len(table) == 4
    for row in table:
        values = errors[(row["configuration"], row["depth"])]
        assert row["seeds"] == "2"
        assert float(row["test_error_mean"]) == pytest.approx(statistics.fmean(values))
        assert float(row["test_error_std"]) == pytest.approx(statistics.stdev(values))
    summary = {r["cell"]: r for r in rows(out / "summary.csv")}
    assert len(summary) == 4
    for run in runs:
        seeds = over_seeds(runs, run, "train_loss")
        cell = configuration(run)
        assert float(summary[cell]["train_loss_mean"]) == pytest.approx(statistics.fmean(seeds))
        assert summary[cell]["finished"] == "2"
    # each configuration against the first value of every axis, per final metric; 2 seeds an
    # arm are too few for a test, which the table says
    compared = [r for r in rows(out / "comparisons.csv") if r["metric"] == "test_acc"]
    reference = "depth=2 shortcut=identity"
    assert sorted(r["configuration"] for r in compared) == sorted(set(summary) - {reference})
    ref_runs = [r for r in runs if configuration(r) == reference]
    for row in compared:
        arm = [r for r in runs if configuration(r) == row["configuration"]]
        shift = statistics.fmean(r.data.metrics["test_acc"] for r in arm)
        shift -= statistics.fmean(r.data.metrics["test_acc"] for r in ref_runs)
        assert float(row["difference"]) == pytest.approx(shift)
        assert row["test"] == "too few seeds (2 < 3)" and row["p"] == ""
    assert f"# Comparisons against `{reference}`" in (out / "comparisons.md").read_text()
    units = rows(out / "signal_propagation.csv")
    assert {r["configuration"] for r in units} == {
        f"depth={d} shortcut={s}" for d in (2, 4) for s in ("identity", "none")
    }

    lesions = {
        (r["configuration"], r["k"]): float(r["test_error"]) for r in rows(out / "lesion.csv")
    }
    for run in runs:  # k = 1: each seed's mean error over its single removals, seeds averaged
        seeds = over_seeds(runs, run, "lesion.error_k1")
        assert lesions[(configuration(run), "1")] == pytest.approx(statistics.fmean(seeds))
        # what a lesion claim is about: the increase over the same net's unlesioned error
        found = run.data.metrics
        increase = found["lesion.error_k1"] - (1 - found["lesion.whole"])
        assert found["lesion.error_increase_k1"] == pytest.approx(increase)
    for depth in (2, 4):  # a plain net collapses when a unit is removed, a ResNet does not
        plain, resnet = (
            lesions[(f"depth={depth} shortcut={s}", "1")] for s in ("none", "identity")
        )
        assert plain > 0.6 and plain > resnet + 0.2, (plain, resnet)

    [parent_id] = {r.data.tags["mlflow.parentRunId"] for r in runs}
    logged = {a.path for a in client.list_artifacts(parent_id, "report")}
    assert {f"report/{n}" for n in [*drawn, "degradation.csv", "report.md"]} <= logged
    assert {"report/comparisons.md", "report/comparisons.csv"} <= logged


CLAIMS = """
report: {reference: {model.shortcut: none, model.depth: 4}}
claims:
  - id: plain-collapses
    says: Removing one unit of a plain net costs most of its accuracy
    where: {model.shortcut: none}
    metric: lesion.error_k1
    above: {value: 0.6, of: every}
    fails_when: the plain net's units lesioned by bypass, as a ResNet's
  - id: spp-at-init
    says: The last unit's variance at init is positive
    metric: spp.fwd_last
    at: init
    above: {value: 0.0, of: every}
    fails_when: a dead stem (zero weights)
  - id: spp-pooled
    says: The seeds' mean series of the last unit's variance at init is positive
    metric: spp.fwd_last
    at: init
    above: {value: 0.0, pool: seeds}
  - id: impossible
    says: Every net is worse than no accuracy at all
    metric: test_acc
    below: {value: 0.0}
  - id: absent
    says: A depth this sweep did not run
    where: {model.depth: 64}
    metric: test_acc
    above: {value: 0.5}
  - id: two-seeds
    says: Identity shortcuts beat none at depth 4
    where: {model.depth: 4}
    metric: test_acc
    compare: {better: higher, a: {model.shortcut: identity}, b: {model.shortcut: none}}
"""


def test_report_tests_the_sweep_files_claims_and_check_fails_on_a_contradiction(
    recorded: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # claims (and report.reference) are not part of the spec's hash: added to the file after the
    # sweep ran, they are tested on its recorded runs
    monkeypatch.chdir(recorded)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write(recorded / "claimed.yaml", SWEEP + CLAIMS)
    ran = cli("report", "claimed.yaml", "--out", "claimed", "--check")
    assert ran.code == 1, ran.err
    assert "contradicted: impossible" in ran.err
    verdicts = {r["claim"]: r for r in rows(recorded / "claimed" / "claims.csv")}
    assert {k: v["verdict"] for k, v in verdicts.items()} == {
        "plain-collapses": "holds",
        "spp-at-init": "holds",
        "spp-pooled": "inconclusive",
        "impossible": "contradicted",
        "absent": "not measured",
        "two-seeds": "inconclusive",
    }
    assert "too few seeds (2 < 3)" in verdicts["two-seeds"]["measured"]
    # the spp probe's series read back from each run's artifact, averaged over the two seeds
    pooled = verdicts["spp-pooled"]["measured"]
    assert pooled.count("pooled over 2 seeds, the law needs ≥ 8") == 4, pooled
    # how many claims name the mutant that turns them, then the claims table, are printed
    # first, and are report.md's first section
    lines = ran.out.splitlines()
    assert lines[0] == "claims: 6, with a mutant: 2"
    assert lines[2] == "| claim | says | verdict | measured | mutant (fails_when) |"
    assert (
        "| impossible | Every net is worse than no accuracy at all | **contradicted** |"
        in (lines[7])
    )
    head = (recorded / "claimed" / "report.md").read_text().split("## Drawn")[0]
    assert "## Claims" in head and "**not measured**" in head
    claims_md = (recorded / "claimed" / "claims.md").read_text()
    assert claims_md.startswith(
        "# Claims: 2 holds, 1 contradicted, 2 inconclusive, 1 not measured\n\n"
        "claims: 6, with a mutant: 2\n"
    )
    assert verdicts["plain-collapses"]["fails_when"].startswith("the plain net's units")
    # judged per configuration: both plain depths, each seed of each
    _, runs = trial_runs(recorded, "reported")
    plain = verdicts["plain-collapses"]["measured"]
    assert plain.count("2 of 2 runs") == 2 and "shortcut=identity" not in plain
    # each verdict on the parent run: tag claim.<id>, metric 1 (holds) / 0 (contradicted)
    client, _ = trial_runs(recorded, "reported")
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"]).data
    assert {k: v for k, v in parent.tags.items() if k.startswith("claim.")} == {
        f"claim.{k}": v["verdict"] for k, v in verdicts.items()
    }
    assert {k: v for k, v in parent.metrics.items() if k.startswith("claim.")} == {
        "claim.plain-collapses": 1.0,
        "claim.spp-at-init": 1.0,
        "claim.impossible": 0.0,
    }
    # the file's report.reference too is read now, not the one recorded with the sweep
    comparisons = (recorded / "claimed" / "comparisons.md").read_text()
    assert comparisons.startswith("# Comparisons against `depth=4 shortcut=none`")
    # without --check a contradiction is a result, not a failure
    assert cli("report", "claimed.yaml", "--out", "claimed", "--no-log").code == 0


def test_report_by_experiment_and_run_and_its_errors(
    recorded: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(recorded)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _, runs = trial_runs(recorded, "reported")
    parent = runs[0].data.tags["mlflow.parentRunId"]
    ran = cli("report", "--experiment", "reported", "--run", parent, "--out", "o2", "--no-log")
    assert ran.code == 0, ran.err
    assert (recorded / "o2" / "degradation.csv").exists()
    for args, expected in (
        (["report"], "name the sweep: resablate report SWEEP.yaml, or --experiment NAME"),
        (["report", "--experiment", "nope"], "no experiment 'nope' in sqlite:///"),
        (["report", "--experiment", "reported", "--run", "abc"], "--run abc: no such run"),
        (["report", "--tracking-uri", "sqlite:////nonexistent/x.db", "--experiment", "e"], ""),
    ):
        failed = cli(*args)
        assert failed.code == 2, (args, failed.err)
        assert failed.err.count("\n") == 1 and expected in failed.err


def test_report_of_a_search_plots_each_candidate_against_its_seed_mean(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write(
        tmp_path / "s.yaml",
        """
name: searchreport
model: {depth: 4, width: 16}
data: {validation: 0.2}
train: {epochs: 1, batch_size: 128}
search:
  {param: init.c, log_uniform: [0.1, 1.0], n_trials: 3, seed: 0, objective: {metric: val_acc}}
grid: {seed: [0, 1]}
""",
    )
    assert cli("sweep", "s.yaml", "--inline", "-q").code == 0
    ran = cli("report", "s.yaml", "--out", "out")
    assert ran.code == 0, ran.err
    assert (tmp_path / "out" / "search.png").exists()
    _, runs = trial_runs(tmp_path, "searchreport")
    table = rows(tmp_path / "out" / "search.csv")
    assert len(table) == 3
    for row in table:
        seeds = [
            r.data.metrics["val_acc"] for r in runs if r.data.params["init.c"] == row["init.c"]
        ]
        assert float(row["val_acc_mean"]) == pytest.approx(statistics.fmean(seeds))
    assert "Best searched value per cell" in (tmp_path / "out" / "summary.md").read_text()


LR_SWEEP = """
name: lrs
model: {family: mlp, width: 16, norm: none}
init: {c: 0.25}
train: {epochs: 2, batch_size: 128}
grid:
  model.depth: [2, 4]
  train.lr: [0.001, 0.05, 0.3]
  seed: [0, 1, 2]
"""


def test_report_gives_each_configuration_its_best_final_loss_over_the_swept_lr(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Demystifying ResNet's Fig. 8 statistic, and the median beside mean ± std."""
    write(tmp_path / "lrs.yaml", LR_SWEEP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert cli("sweep", "lrs.yaml", "--inline", "-q").code == 0
    ran = cli("report", "lrs.yaml", "--out", "out")
    assert ran.code == 0, ran.err
    _, runs = trial_runs(tmp_path, "lrs")
    losses: dict[str, dict[float, list[float]]] = {}
    for run in runs:
        config = f"depth={run.data.params['model.depth']}"
        lr = float(run.data.params["train.lr"])
        losses.setdefault(config, {}).setdefault(lr, []).append(run.data.metrics["train_loss"])
    best = {r["configuration"]: r for r in rows(tmp_path / "out" / "best_over_lr.csv")}
    assert set(best) == set(losses) == {"depth=2", "depth=4"}
    for config, by_lr in losses.items():
        means = {lr: statistics.fmean(v) for lr, v in by_lr.items()}
        lr = min(means, key=means.__getitem__)
        assert float(best[config]["best_lr"]) == lr
        assert float(best[config]["train_loss_mean"]) == pytest.approx(means[lr])
        assert best[config]["seeds"] == "3" and best[config]["lrs"] == "3"
        assert max(means.values()) > 1.5 * means[lr]  # the lr mattered: the choice is real
    assert (tmp_path / "out" / "best_over_lr.png").read_bytes()[:4] == b"\x89PNG"
    summary = rows(tmp_path / "out" / "summary.csv")
    for row in summary:
        config, lr = row["cell"].split(" lr=")
        values = losses[config][float(lr)]
        assert float(row["train_loss_median"]) == pytest.approx(statistics.median(values))


def test_report_draws_the_hessian_during_training_from_mlflows_numbers(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Demystifying ResNet's Figs. 5-6: index and largest |λ| at init and every k epochs."""
    write(
        tmp_path / "h.yaml",
        "name: hess\nmodel: {width: 8, depth: 4}\ninit: {c: 0.5}\n"
        "train: {epochs: 2, batch_size: 256, lr: 0.05}\n"
        "probes: {hessian: {at: [init], every: 1, batch: 64}}\n"
        "grid: {model.shortcut: [identity, none], seed: [0, 1]}\n",
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert cli("sweep", "h.yaml", "--inline", "-q").code == 0
    ran = cli("report", "h.yaml", "--out", "out")
    assert ran.code == 0, ran.err
    assert (tmp_path / "out" / "hessian_training.png").read_bytes()[:4] == b"\x89PNG"
    client, runs = trial_runs(tmp_path, "hess")
    table = rows(tmp_path / "out" / "hessian_training.csv")
    assert sorted({r["epoch"] for r in table}) == ["0", "1", "2"]
    for row in table:
        members = [
            r
            for r in runs
            if f"shortcut={r.data.params['model.shortcut']}" == row["configuration"]
        ]
        found = []
        for run in members:
            history = client.get_metric_history(run.info.run_id, "hessian.index")
            found += [m.value for m in history if m.step == int(row["epoch"])]
        assert len(found) == 2 and float(row["index_mean"]) == pytest.approx(
            statistics.fmean(found)
        )


def test_claims_md_counts_the_claims_that_name_their_mutant(tmp_path: Path) -> None:
    """science.md §7: each claim names the broken variant that turns its verdict."""
    from resablate.analysis.claims_table import table
    from resablate.analysis.figures import ReportFolder
    from resablate.spec.claims import ClaimSpec
    from resablate.tracking.ledger import RunData, SweepRuns

    runs = [
        RunData(f"r{s}", "finished", {"model.depth": "4", "seed": str(s)}, {}, {"test_acc": 0.9})
        for s in range(3)
    ]
    recorded = {"sweep.resolved.json": {}, "search.json": {}}
    sweep = SweepRuns("mem", "e", "0", runs[0], runs, store=None, _parents=recorded)  # type: ignore[arg-type]
    claims = [
        ClaimSpec.model_validate(
            {"id": f"c{i}", "says": "s", "metric": "test_acc", "above": {"value": 0.5}, **extra}
        )
        for i, extra in enumerate(({"fails_when": "labels shuffled"}, {"fails_when": "lr 0"}, {}))
    ]
    report = ReportFolder(tmp_path)
    table(sweep, claims, ["model.depth", "seed"], report)
    lines = (tmp_path / "claims.md").read_text().splitlines()
    assert lines[0] == "# Claims: 3 holds, 0 contradicted, 0 inconclusive, 0 not measured"
    assert lines[2] == "claims: 3, with a mutant: 2"
    assert report.claims[0] == lines[2]  # what `resablate report` prints first
    assert [r["fails_when"] for r in rows(tmp_path / "claims.csv")] == [
        "labels shuffled",
        "lr 0",
        "",
    ]


def test_a_mutant_is_judged_only_beside_a_measured_claim_and_turns_only_a_holding_one(
    tmp_path: Path,
) -> None:
    from resablate.analysis.claims_table import table
    from resablate.analysis.figures import ReportFolder
    from resablate.spec.claims import ClaimSpec
    from resablate.tracking.ledger import RunData, SweepRuns

    runs = [
        RunData(
            f"r{d}{s}", "finished", {"model.depth": str(d), "seed": str(s)}, {}, {"test_acc": a}
        )
        for d, a in ((4, 0.9), (8, 0.1))
        for s in range(3)
    ]
    recorded = {"sweep.resolved.json": {}, "search.json": {}}
    sweep = SweepRuns("mem", "e", "0", runs[0], runs, store=None, _parents=recorded)  # type: ignore[arg-type]
    raw = [  # (where, the mutant's where)
        ({"model.depth": 4}, {"model.depth": 8}),  # holds; its mutant (depth 8) does not
        ({"model.depth": 4}, {"model.depth": 4}),  # a mutant that changes nothing: not turned
        ({"model.depth": 16}, {"model.depth": 4}),  # not measured: its mutant says nothing
    ]
    claims = [
        ClaimSpec.model_validate(
            {
                "id": f"c{i}",
                "says": "s",
                "where": where,
                "metric": "test_acc",
                "above": {"value": 0.5},
                "fails_when": "another depth",
                "mutant": {"where": mutant},
            }
        )
        for i, (where, mutant) in enumerate(raw)
    ]
    report = ReportFolder(tmp_path)
    found = table(sweep, claims, ["model.depth", "seed"], report)
    assert [v.verdict for v in found] == ["holds", "holds", "not measured"]
    assert [v.mutant.verdict if v.mutant else None for v in found] == [
        "contradicted",
        "holds",
        None,
    ]
    assert report.claims[0] == (
        "claims: 3, with a mutant: 3; judged on their mutant arm here: 2, holding: 2, turned: 1"
    )
    assert [r["mutant_verdict"] for r in rows(tmp_path / "claims.csv")] == [
        "contradicted",
        "holds",
        "",
    ]


def test_the_report_lists_cells_in_the_grids_order(
    recorded: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the console and the parent run's summary.md do, whatever order MLflow returns."""
    monkeypatch.chdir(recorded)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ran = cli("report", "r.yaml", "--out", "ordered")
    assert ran.code == 0, ran.err
    grid_order = [
        f"depth={d} shortcut={s}" for d in (2, 4) for s in ("identity", "none")
    ]  # model.depth varies slowest, as written
    assert [r["cell"] for r in rows(recorded / "ordered" / "summary.csv")] == grid_order
    degradation = [r["configuration"] for r in rows(recorded / "ordered" / "degradation.csv")]
    assert list(dict.fromkeys(degradation)) == ["shortcut=identity", "shortcut=none"]
