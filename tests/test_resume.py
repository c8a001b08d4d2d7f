"""Kill and resume: a real sweep in a real process, killed at several points, then --resume.

After the resume every trial has exactly one finished child run, no run is left RUNNING, the
parent run is the same, and the trials that had finished before the kill were not run again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from resablate.sweep.plan import make_plan
from tests.conftest import run_process, trial_runs, write

# every test records in its tmp_path's mlflow.db, a copy of an empty store (conftest.store_uri):
# MLflow takes seconds to create one, which the tests that create theirs still do
pytestmark = pytest.mark.usefixtures("store_uri")

GRID = """
name: killed
model: {depth: 8, width: 48}
init: {c: 0.25}
train: {epochs: 5, batch_size: 32, lr: 0.02}
resources: {max_concurrent_trials: 1, trials_per_stack: 1}  # one seed at a time: kill points
grid:
  seed: [0, 1, 2, 3, 4]
"""

SEARCH = """
name: killsearch
model: {depth: 8, width: 48}
data: {validation: 0.2}
train: {epochs: 4, batch_size: 32, lr: 0.02}
search: {param: init.c, log_uniform: [0.05, 1.0], n_trials: 3, seed: 1}
resources: {max_concurrent_trials: 2, trials_per_stack: 1}
grid:
  model.shortcut: [identity, none]
  seed: [0, 1]
"""

Query = Callable[[str], list[tuple]]


def query(db: Path) -> Query:
    def run(sql: str) -> list[tuple]:
        for _ in range(50):  # the driver may hold the write lock for a moment
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
                    return conn.execute(sql).fetchall()
            except sqlite3.OperationalError:
                time.sleep(0.05)
        return []

    return run


CHILDREN = (
    "select r.run_uuid, r.status, count(m.key) from runs r"
    " join tags t on t.run_uuid = r.run_uuid and t.key = 'trial_id'"
    " left join metrics m on m.run_uuid = r.run_uuid group by r.run_uuid"
)


def start(folder: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen(
        [sys.executable, "-m", "resablate.cli", "sweep", *args, "-q"],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # the driver and the Ray it starts: one process group
    )


def wait_until(
    proc: subprocess.Popen,
    check: Callable[[], bool],
    timeout: float = 120,
    point: str = "the kill point",
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f"the sweep ended before {point}: {proc.stderr}"
        assert time.monotonic() < deadline, f"{point} not reached in {timeout} s"
        time.sleep(0.02)


def signals(pid: int, mask: str) -> set[int]:
    """The signals in mask ``mask`` of /proc/<pid>/status: SigCgt (caught by a handler),
    SigPnd and ShdPnd (sent, not yet delivered)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{mask}:"):
            bits = int(line.split()[1], 16)
            return {n + 1 for n in range(64) if bits >> n & 1}
    raise AssertionError(f"no {mask} in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """The CPU time a process has used, all its threads, user and system (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_commands(pgid: int) -> set[str]:
    """The command names of the processes in process group ``pgid`` (Linux's /proc)."""
    names = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            text = stat.read_text()
            name, rest = text[text.index("(") + 1 : text.rindex(")")], text.rindex(")")
            if int(text[rest + 2 :].split()[2]) == pgid:
                names.add(name)
    return names


def kill_hard(proc: subprocess.Popen) -> None:
    """SIGKILL the driver, then whatever of its Ray survives it (a machine losing power)."""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def finished_ids(db: Path) -> set[str]:
    rows = query(db)(CHILDREN) if db.exists() else []
    return {run for run, status, _ in rows if status == "FINISHED"}


# each kill point: (backend flag, condition on the child runs (run id, status, n metrics))
POINTS: dict[str, tuple[list[str], Callable[[list[tuple]], bool]]] = {
    "during Ray start": ([], lambda rows: True),
    "mid-trial": (
        [],
        lambda rows: (
            sum(s == "FINISHED" for _, s, _ in rows) >= 1
            and any(s == "RUNNING" and n > 0 for _, s, n in rows)
        ),
    ),
    "between trials": (["--inline"], lambda rows: sum(s == "FINISHED" for _, s, _ in rows) >= 2),
    "while logging a new run": (
        ["--inline"],
        lambda rows: (
            sum(s == "FINISHED" for _, s, _ in rows) >= 1
            and any(s == "RUNNING" and n == 0 for _, s, n in rows)
        ),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(POINTS))
def test_a_sweep_killed_anywhere_resumes_with_one_finished_run_per_trial(
    tmp_path: Path, point: str
) -> None:
    sweep = write(tmp_path / "k.yaml", GRID)
    db = tmp_path / "mlflow.db"
    flags, reached = POINTS[point]
    proc = start(tmp_path, str(sweep), *flags)
    if point == "during Ray start":  # Ray's first process is up, the sweep has not begun
        wait_until(proc, lambda: "gcs_server" in group_commands(proc.pid))
    else:
        wait_until(proc, lambda: db.exists() and reached(query(db)(CHILDREN)))
    kill_hard(proc)
    before = finished_ids(db)
    if point == "during Ray start":  # where the kill landed: before the parent run existed
        assert not (db.exists() and query(db)("select run_uuid from runs"))

    ran = run_process("sweep", str(sweep), "--resume", "-q", *flags, cwd=tmp_path)
    assert ran.code == 0, ran.err[-3000:]

    client, runs = trial_runs(tmp_path, "killed")
    plan = make_plan(sweep)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["trial_id"] for r in finished) == sorted(t.id for t in plan.trials)
    assert all(r.data.tags["resablate.status"] == "finished" for r in finished)
    assert [r for r in runs if r.info.status == "RUNNING"] == []
    assert before <= {r.info.run_id for r in finished}  # kept, not run again
    stale = [r for r in runs if r.info.status != "FINISHED"]
    assert all(r.data.tags["resablate.status"] == "killed" for r in stale)
    experiment = client.get_experiment_by_name("killed")
    parents = client.search_runs([experiment.experiment_id], "tags.`resablate.kind` = 'sweep'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
    for run in finished:  # every epoch once: a resumed trial does not append to a stale run
        history = client.get_metric_history(run.info.run_id, "test_acc")
        assert [m.step for m in history] == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_a_sweep_killed_mid_stack_reruns_the_stack_and_records_each_seed_once(
    tmp_path: Path,
) -> None:
    text = GRID.replace("epochs: 5", "epochs: 60").replace(
        "{max_concurrent_trials: 1, trials_per_stack: 1}", "{max_concurrent_trials: 2}"
    )
    sweep = write(tmp_path / "k.yaml", text)  # auto: 2 stacks (2 + 3 seeds), one per slot
    db = tmp_path / "mlflow.db"
    proc = start(tmp_path, str(sweep))
    wait_until(proc, lambda: db.exists() and any(n > 0 for _, _, n in query(db)(CHILDREN)))
    kill_hard(proc)
    assert not finished_ids(db)  # killed while both stacks trained

    ran = run_process("sweep", str(sweep), "--resume", "-q", cwd=tmp_path, timeout=300)
    assert ran.code == 0, ran.err[-3000:]
    client, runs = trial_runs(tmp_path, "killed")
    plan = make_plan(sweep)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["trial_id"] for r in finished) == sorted(t.id for t in plan.trials)
    assert sorted(r.data.tags["resablate.stack_size"] for r in finished) == ["2"] * 2 + ["3"] * 3
    # killed before a checkpoint, a stack reruns; after one, its runs go on (test_preemption.py)
    stale = [r for r in runs if r.info.status != "FINISHED"]
    assert all(r.data.tags["resablate.status"] == "killed" for r in stale)
    for run in finished:  # every epoch once: a stack's rerun does not append to a killed run
        history = client.get_metric_history(run.info.run_id, "test_acc")
        assert [m.step for m in history] == list(range(1, 61))


PARENTS = (
    "select status from runs where run_uuid not in"
    " (select run_uuid from tags where key = 'trial_id')"
)


# trials of a few seconds each, so that a Ctrl-C pressed as one finishes lands before the sweep
# ends on any machine (with 5 epochs a fast one finished all five first)
LONGER = GRID.replace("epochs: 5", "epochs: 40")


def ctrl_c(tmp_path: Path, sweep: Path, after: int, *flags: str) -> str:
    """Run the sweep, press Ctrl-C once ``after`` trials finished; check the graceful stop."""
    db = tmp_path / "mlflow.db"
    proc = start(tmp_path, str(sweep), *flags)
    wait_until(proc, lambda: db.exists() and len(finished_ids(db)) >= after)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        kill_hard(proc)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert "--resume" in err.decode()
    assert query(db)(PARENTS) == [("KILLED",)]
    # the runs still going were closed as killed, not left running, and the summary names them
    assert not [r for r in query(db)(CHILDREN) if r[1] == "RUNNING"]
    client, runs = trial_runs(tmp_path, "killed")
    killed = [r.data.tags["mlflow.runName"] for r in runs if r.info.status == "KILLED"]
    [parent] = {r.data.tags["mlflow.parentRunId"] for r in runs}
    summary = Path(client.download_artifacts(parent, "summary.md", str(tmp_path))).read_text()
    if killed:  # (a Ctrl-C between two trials kills none)
        [line] = [x for x in summary.splitlines() if x.startswith("killed, --resume continues")]
        assert f": {len(killed)} trial(s): " in line and all(name in line for name in killed)
    else:
        assert "killed" not in summary
    return err.decode()


@pytest.mark.slow
def test_ctrl_c_stops_gracefully_and_resume_finishes(tmp_path: Path) -> None:
    sweep = write(tmp_path / "k.yaml", LONGER)
    ctrl_c(tmp_path, sweep, 2)
    before = finished_ids(tmp_path / "mlflow.db")

    ran = run_process("sweep", str(sweep), "--resume", cwd=tmp_path, timeout=300)
    assert ran.code == 0
    assert "resuming parent run" in ran.err
    assert f"{len(before)} trial(s) already finished" in " ".join(ran.err.split())
    _, runs = trial_runs(tmp_path, "killed")
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == 5 and before <= {r.info.run_id for r in finished}
    assert [r for r in runs if r.info.status == "RUNNING"] == []


@pytest.mark.slow
def test_an_interrupted_inline_sweep_is_hinted_at_by_the_next_run(tmp_path: Path) -> None:
    sweep = write(tmp_path / "k.yaml", LONGER)
    ctrl_c(tmp_path, sweep, 1, "--inline")

    again = run_process("sweep", str(sweep), "--inline", "--set", "grid.seed=[0]", cwd=tmp_path)
    assert again.code == 0
    assert "did not finish; --resume continues it. Starting a new run." in " ".join(
        again.err.split()
    )


# one epoch of several seconds: a stop request waits for it, a second signal does not
SLOW_EPOCH = """
name: slowepoch
data: {name: synthetic, samples: 60000, features: 256}
model: {depth: 16, width: 1024}
train: {epochs: 3, batch_size: 2, lr: 0.001}
"""


@pytest.mark.slow
def test_sigterm_requests_a_stop_and_a_second_signal_stops_at_once(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    proc = start(tmp_path, str(write(tmp_path / "s.yaml", SLOW_EPOCH)), "--inline")
    try:
        wait_until(proc, lambda: db.exists() and bool(query(db)(CHILDREN)))  # training
        assert signal.SIGTERM in signals(proc.pid, "SigCgt"), "SIGTERM would kill the driver"
        proc.send_signal(signal.SIGTERM)  # a request: read after the running epoch

        def delivered() -> bool:
            return signal.SIGTERM not in signals(proc.pid, "SigPnd") | signals(proc.pid, "ShdPnd")

        wait_until(proc, delivered, 30, "SIGTERM's delivery")
        trained = cpu_seconds(proc.pid) + 0.5

        def training_on() -> bool:
            # a stop at once would close the trial's run: a request leaves it training
            running = [status for _, status, _ in query(db)(CHILDREN)]
            assert running in ([], ["RUNNING"]), f"the first signal stopped the trial: {running}"
            return cpu_seconds(proc.pid) >= trained

        wait_until(proc, training_on, 120, "half a CPU second of training after SIGTERM")
        pressed = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        kill_hard(proc)
    assert time.monotonic() - pressed < 10  # not the rest of the epoch
    assert proc.returncode == 130, err.decode()[-2000:]
    assert "--resume" in err.decode()
    assert query(db)(PARENTS) == [("KILLED",)]
    # stopped inside its first epoch, which a request would have finished and logged
    assert [(status, metrics) for _, status, metrics in query(db)(CHILDREN)] == [("KILLED", 0)]


def test_resume_refuses_a_changed_sweep_unless_forced(tmp_path: Path, cli, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sweep = write(tmp_path / "k.yaml", GRID.replace("epochs: 5", "epochs: 1"))
    small = ["--set", "grid.seed=[0,1]"]
    assert cli("sweep", str(sweep), "--inline", "-q", *small).code == 0
    # nothing left to do: --resume reruns nothing and ends the same parent run
    assert cli("sweep", str(sweep), "--inline", "-q", "--resume", *small).code == 0
    _, runs = trial_runs(tmp_path, "killed")
    assert len(runs) == 2

    bigger = ["--set", "grid.seed=[0,1,2]"]
    refused = cli("sweep", str(sweep), "--inline", "-q", "--resume", *bigger)
    assert refused.code == 2
    assert refused.err.count("\n") == 1 and "the sweep changed since parent run" in refused.err
    assert "pass --force" in refused.err
    assert cli("sweep", str(sweep), "--force", *bigger).code == 2  # --force needs --resume

    forced = cli("sweep", str(sweep), "--inline", "-q", "--resume", "--force", *bigger)
    assert forced.code == 0, forced.err
    client, runs = trial_runs(tmp_path, "killed")
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1", "2"]  # only seed 2 ran
    [parent] = {r.data.tags["mlflow.parentRunId"] for r in runs}
    tags = client.get_run(parent).data.tags
    assert tags["resablate.resumes"] == "2" and "resablate.spec_hash.before_resume_2" in tags
    assert tags["resablate.spec_hash"] == make_plan(sweep, bigger[1:]).spec.hash()
    names = {a.path for a in client.list_artifacts(parent)}
    assert {"sweep.resume_2.yaml", "plan.resume_2.json"} <= names


def ran_to_its_end(tmp_path: Path, cli, monkeypatch, seeds: str) -> Path:
    """The one-epoch GRID sweep with ``seeds``, run to its end in ``tmp_path``'s store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sweep = write(tmp_path / "k.yaml", GRID.replace("epochs: 5", "epochs: 1"))
    assert cli("sweep", str(sweep), "--inline", "-q", "--set", f"grid.seed={seeds}").code == 0
    return sweep


def test_a_sweep_that_ran_to_its_end_is_not_run_twice_by_accident(
    tmp_path: Path, cli, monkeypatch
) -> None:
    two = ["--set", "grid.seed=[0,1]"]
    sweep = ran_to_its_end(tmp_path, cli, monkeypatch, "[0,1]")
    _, runs = trial_runs(tmp_path, "killed")
    [parent] = {r.data.tags["mlflow.parentRunId"] for r in runs}

    again = cli("sweep", str(sweep), "--inline", "-q", *two)
    assert again.code == 2 and again.err.count("\n") == 1, again.err
    assert f"'killed' ran to its end as parent run {parent} (2 trial(s) finished)" in again.err
    assert f"`resablate report {sweep}` reads it" in again.err and "--new runs it all" in again.err
    changed = cli("sweep", str(sweep), "--inline", "-q", "--set", "grid.seed=[0,1,2]")
    assert changed.code == 2 and "with another grid (spec hash" in changed.err, changed.err
    assert "--resume --force adds its new trials" in changed.err
    assert cli("sweep", str(sweep), "--new", "--resume", *two).code == 2
    _, runs = trial_runs(tmp_path, "killed")
    assert len(runs) == 2  # nothing was recorded by the refused reruns

    assert cli("sweep", str(sweep), "--inline", "-q", "--new", *two).code == 0
    _, runs = trial_runs(tmp_path, "killed")
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert len(runs) == 4 and len(parents) == 2 and parent in parents


def test_a_submission_checks_the_same_refusal_and_passes_resume_or_new_to_its_job(
    tmp_path: Path, cli, monkeypatch
) -> None:
    from resablate.errors import UserError
    from resablate.sweep.driver import Options, check_rerun
    from resablate.sweep.ray.jobs import entrypoint

    sweep = ran_to_its_end(tmp_path, cli, monkeypatch, "[0]")
    plan = make_plan(sweep, ["grid.seed=[0]"])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(UserError, match="'killed' ran to its end as parent run"):
        check_rerun(plan, uri, Options())
    check_rerun(plan, uri, Options(new=True))
    check_rerun(plan, uri, Options(resume=True))
    check_rerun(make_plan(sweep, ["grid.seed=[0]", "name=other"]), uri, Options())  # not run yet
    words = entrypoint(plan, "http://mlflow:5000", None, tmp_path, flags=("--new",)).split()
    assert words[:3] == ["resablate", "sweep", "k.yaml"] and words[-1] == "--new"


@pytest.mark.slow
def test_a_second_driver_of_the_same_sweep_is_refused(tmp_path: Path) -> None:
    # trials long enough (minutes) that the first driver still runs whatever the machine's speed
    sweep = write(tmp_path / "k.yaml", GRID.replace("epochs: 5", "epochs: 5000"))
    db = tmp_path / "mlflow.db"
    proc = start(tmp_path, str(sweep), "--inline")
    try:
        wait_until(proc, lambda: db.exists() and len(query(db)(CHILDREN)) >= 1)
        second = run_process("sweep", str(sweep), "--inline", "-q", cwd=tmp_path)
        assert proc.poll() is None  # the first driver was running all along
        assert second.code == 2
        assert f"resablate-runs/killed (driver pid {proc.pid})" in second.err
    finally:
        kill_hard(proc)


@pytest.mark.slow
def test_a_killed_search_resumes_its_studies_without_duplicate_runs(tmp_path: Path) -> None:
    sweep = write(tmp_path / "s.yaml", SEARCH)
    db = tmp_path / "mlflow.db"
    proc = start(tmp_path, str(sweep))
    wait_until(proc, lambda: db.exists() and len(finished_ids(db)) >= 5, timeout=300)
    kill_hard(proc)
    before = finished_ids(db)
    [journal] = (tmp_path / "resablate-runs" / "killsearch" / "optuna").glob("*.journal")
    storage = JournalStorage(JournalFileBackend(str(journal)))
    states = Counter(
        t.state
        for s in optuna.get_all_study_summaries(storage)
        for t in optuna.load_study(study_name=s.study_name, storage=storage).trials
    )
    assert states[optuna.trial.TrialState.RUNNING] >= 1  # a candidate was cut off

    ran = run_process("sweep", str(sweep), "--resume", "-q", cwd=tmp_path, timeout=300)
    assert ran.code == 0, ran.err[-3000:]
    _, runs = trial_runs(tmp_path, "killsearch")
    finished = [r for r in runs if r.info.status == "FINISHED"]
    keys = Counter(
        (r.data.tags["search_cell"], r.data.tags["c"], r.data.tags["seed"]) for r in finished
    )
    assert len(keys) == 2 * 3 * 2 and set(keys.values()) == {1}  # cells × candidates × seeds, once
    assert [r for r in runs if r.info.status == "RUNNING"] == []
    assert before <= {r.info.run_id for r in finished}
    studies = {
        s.study_name: optuna.load_study(study_name=s.study_name, storage=storage)
        for s in optuna.get_all_study_summaries(storage)
    }
    assert len(studies) == 2
    for cell, study in studies.items():
        assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
        for trial in study.trials:
            seeds = [
                r
                for r in finished
                if r.data.tags["search_cell"] == cell
                and float(r.data.tags["c"]) == trial.params["init.c"]
            ]
            assert len(seeds) == 2
            # each seed told once: a finished one by its val_acc, a diverged one by the cell's
            # worst value (so it is no seed's own number)
            scores = sorted(trial.user_attrs["seed_scores"])
            diverged = [r for r in seeds if r.data.tags["resablate.status"] == "diverged"]
            assert trial.user_attrs["diverged_seeds"] == len(diverged)
            ran = sorted(r.data.metrics["val_acc"] for r in seeds if r not in diverged)
            if not diverged:
                assert scores == pytest.approx(ran)
            assert all(any(s == pytest.approx(v) for s in scores) for v in ran), (scores, ran)
            assert trial.value == pytest.approx(sum(scores) / 2)


@pytest.mark.slow
def test_an_int_search_runs_each_value_once_and_tells_repeats_its_score(tmp_path: Path) -> None:
    sweep = write(
        tmp_path / "i.yaml",
        """
name: intsearch
model: {depth: 4, width: 16}
data: {validation: 0.2}
train: {epochs: 1, batch_size: 128}
search: {param: model.width, int: [8, 9], n_trials: 5, sampler: random, seed: 0}
grid: {seed: [0, 1]}
""",
    )
    ran = run_process("sweep", str(sweep), "--inline", "-q", cwd=tmp_path)
    assert ran.code == 0, ran.err[-3000:]
    _, runs = trial_runs(tmp_path, "intsearch")
    widths = Counter(r.data.params["model.width"] for r in runs)
    assert set(widths) <= {"8", "9"} and set(widths.values()) == {2}  # each value's seeds, once
    [journal] = (tmp_path / "resablate-runs" / "intsearch" / "optuna").glob("*.journal")
    storage = JournalStorage(JournalFileBackend(str(journal)))
    [summary] = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert len(study.trials) == 5
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    by_width: dict[int, set[float]] = {}
    for trial in study.trials:
        by_width.setdefault(trial.params["model.width"], set()).add(trial.value)
    assert all(len(values) == 1 for values in by_width.values())  # a repeat is told the same
    assert sum("repeat_of" in t.user_attrs for t in study.trials) == 5 - len(by_width)


def workers(session: int) -> list[int]:
    """Ray Tune's trial workers (processes titled ray::ImplicitFunc) in a process group."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0]
            if title.startswith(b"ray::ImplicitFunc") and os.getsid(int(entry.name)) == session:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_two_sweeps_share_one_sqlite_store_at_once(tmp_path: Path) -> None:
    body = GRID.replace("epochs: 5", "epochs: 2")
    first = write(tmp_path / "a.yaml", body.replace("name: killed", "name: first"))
    second = write(tmp_path / "b.yaml", body.replace("name: killed", "name: second"))
    procs = [start(tmp_path, str(first), "--inline"), start(tmp_path, str(second), "--inline")]
    try:
        errors = [p.communicate(timeout=300)[1].decode() for p in procs]
    finally:
        for p in procs:
            kill_hard(p)
    assert [p.returncode for p in procs] == [0, 0], errors
    for name in ("first", "second"):
        _, runs = trial_runs(tmp_path, name)
        assert sorted(r.data.params["seed"] for r in runs) == ["0", "1", "2", "3", "4"]
        assert {r.info.status for r in runs} == {"FINISHED"}


def test_a_gpu_out_of_memory_is_named_with_its_fix() -> None:
    import torch

    from resablate.sweep.worker import failure_text

    try:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    except torch.cuda.OutOfMemoryError as exc:
        text = failure_text(exc)
    first, *rest = text.splitlines()
    assert first.startswith("GPU out of memory: lower train.batch_size")
    assert "resources.gpu" in first and "Tried to allocate 2.00 GiB" in rest[-1]
    assert "resources.trials_per_stack: 1" in first
    assert failure_text(ValueError("x")).splitlines()[-1] == "ValueError: x"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["ray", "inline"])
def test_a_full_disk_stops_the_sweep_in_one_line_and_resume_finishes_it(
    tmp_path: Path, backend: str
) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("needs a small tmpfs to fill (mount, as root)")
    try:
        sweep = write(tmp_path / "k.yaml", GRID.replace("epochs: 5", "epochs: 20"))
        db = disk / "mlflow.db"
        uri = ["--tracking-uri", f"sqlite:///{db}"]
        flags = [*uri, "--inline"] if backend == "inline" else uri
        proc = start(tmp_path, str(sweep), *flags)
        wait_until(proc, lambda: db.exists() and len(finished_ids(db)) >= 2)
        with open(disk / "filler", "wb", buffering=0) as filler:
            with contextlib.suppress(OSError):
                while True:
                    filler.write(b"\0" * 4096)
            _, err = proc.communicate(timeout=300)
        kill_hard(proc)
        lines = err.decode().strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, err.decode()[-3000:]
        assert lines[0].startswith(f"resablate: error: tracking store sqlite:///{db} failed:")
        assert "database or disk is full" in lines[0] and "--resume" in lines[0]
        before = finished_ids(db)
        assert len(before) >= 2

        (disk / "filler").unlink()
        ran = run_process("sweep", str(sweep), *flags, "--resume", "-q", cwd=tmp_path)
        assert ran.code == 0, ran.err[-3000:]
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{db}")
        experiment = client.get_experiment_by_name("killed")
        runs = client.search_runs([experiment.experiment_id], "tags.trial_id != ''")
        finished = [r for r in runs if r.info.status == "FINISHED"]
        assert sorted(r.data.params["seed"] for r in finished) == ["0", "1", "2", "3", "4"]
        assert before <= {r.info.run_id for r in finished}
        assert [r for r in runs if r.info.status == "RUNNING"] == []
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
