"""The figures `resablate report` draws stay readable with many configurations: each line is
labelled by the keys that vary between the lines only, one legend lies outside the axes, every
line has its own colour, style and marker, too many lines split into small multiples, and a probe
at init draws one line per net (the lr cannot change a net at init)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write

# 18 trained configurations (2 shortcuts × 3 inits × 2 placements, the lr swept for one of them)
# at two depths; a one-valued axis (width) that no label may show
MANY = """
name: many
data: {name: synthetic}
model: {family: mlp, norm: none}
train: {epochs: 3, batch_size: 64}
probes: {spp: {at: [init], input: noise, batch: 32}}
grid:
  model.depth: [2, 4]
  model.width: [8]
  model.shortcut: [identity, none]
  init.scheme: [he, xavier, orthogonal]
  model.activation: [mid, pre]
  train.lr: [0.02, 0.05]
  exclude:
    - {model.activation: pre, train.lr: 0.05}
"""


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory, migrated_db: Path) -> dict[str, Any]:
    """The report's figures of a recorded 36-trial sweep, kept open."""
    from resablate.analysis.report import HISTORIES, HISTORY_PREFIXES, make_report
    from resablate.cli.main import main
    from resablate.tracking.ledger import read_sweep

    folder = tmp_path_factory.mktemp("many")
    shutil.copy(migrated_db, folder / "mlflow.db")  # an empty store (conftest.migrated_db)
    write(folder / "many.yaml", MANY)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        with pytest.raises(SystemExit) as ended:
            main(["sweep", "many.yaml", "--inline", "-q"])
        assert ended.value.code == 0
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    sweep = read_sweep(uri, "many", None, HISTORIES, HISTORY_PREFIXES)
    report, _ = make_report(sweep, folder / "report", claimed=[], keep=True)
    return report.figures


# per figure, the grid keys that vary between its lines (width has one value; the seed is
# averaged; depth is the degradation plot's x-axis; at init the lr cannot change a net)
VARYING = {
    "learning_curves.png": {"depth", "shortcut", "scheme", "activation", "lr"},
    "degradation.png": {"shortcut", "scheme", "activation", "lr"},
    "signal_propagation.png": {"depth", "shortcut", "scheme", "activation"},
}


def lines_in(axes: list[Any]) -> int:
    return sum(len(ax.get_lines()) for ax in axes)


def legend_of(fig: Any) -> tuple[Any, list[str]]:
    [legend] = fig.legends
    return legend, [t.get_text() for t in legend.get_texts()]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["learning_curves.png", "degradation.png", "signal_propagation.png"]
)
def test_a_figure_of_many_lines_keeps_its_legend_outside_and_labels_what_varies(
    drawn: dict[str, Any], name: str
) -> None:
    fig = drawn[name]
    fig.canvas.draw()
    legend, labels = legend_of(fig)
    box = legend.get_window_extent()
    for ax in fig.axes:
        assert not ax.get_legend()  # one legend for the figure, none inside an axes
        assert box.x0 >= ax.get_window_extent().x1  # right of every panel: covers no data
    assert box.x1 <= fig.bbox.x1 + 1  # and inside the image, not cut at its edge
    # the keys that vary, each said once: by a row's title or by the labels, and no other key
    titles = {ax.get_title(loc="left") for ax in fig.axes} - {""}
    said = {part.split("=")[0] for text in [*labels, *titles] for part in text.split()}
    assert said == VARYING[name], (said, labels)
    # each line its own colour, line style and marker, the same in every panel
    styles: dict[str, tuple[str, str, str]] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_label() in labels:
                style = (str(line.get_color()), line.get_linestyle(), str(line.get_marker()))
                assert styles.setdefault(line.get_label(), style) == style
    assert len(set(styles.values())) == len(styles) == len(labels)


@pytest.mark.slow
def test_more_than_ten_lines_split_into_a_row_of_panels_per_value_of_an_axis(
    drawn: dict[str, Any],
) -> None:
    fig = drawn["learning_curves.png"]
    _, labels = legend_of(fig)
    assert lines_in(fig.axes[0::2]) == 36  # 18 configurations at 2 depths, one line each ...
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert len(fig.axes) >= 4 and all(titles)  # ... in rows of panels, each row titled
    rows = sorted(set(titles))
    key = rows[0].split("=")[0]
    assert all(t.startswith(f"{key}=") for t in rows) and len(rows) >= 2
    assert all(f"{key}=" not in t for t in labels)  # the row says it, the labels do not
    for ax in fig.axes:  # epochs are whole numbers
        assert all(float(t).is_integer() for t in ax.get_xticks())


@pytest.mark.slow
def test_a_probe_at_init_draws_one_line_per_net_whatever_the_lr(drawn: dict[str, Any]) -> None:
    fig = drawn["signal_propagation.png"]
    _, labels = legend_of(fig)
    assert all("lr=" not in t for t in labels)
    # 2 depths × 2 shortcuts × 3 inits × 2 placements: 24 nets, not the 36 trained ones
    assert lines_in(fig.axes[0::2]) == 24
    _, trained = legend_of(drawn["learning_curves.png"])
    assert any("lr=" in t for t in trained)  # where training differs, the lr is a key


def test_a_degradation_plot_needs_two_depths_of_one_configuration(tmp_path: Path) -> None:
    from resablate.analysis.figures import ReportFolder
    from resablate.analysis.report import _degradation
    from resablate.tracking.ledger import RunData, SweepRuns

    def run(i: int, depth: int, shortcut: str) -> RunData:
        params = {"model.depth": str(depth), "model.shortcut": shortcut, "seed": "0"}
        metrics = {"train_acc": 0.9, "test_acc": 0.8}
        return RunData(f"r{i}", "finished", params, {}, metrics)

    grid = ["model.depth", "model.shortcut", "seed"]
    one_each = [run(0, 2, "identity"), run(1, 4, "none")]  # two depths, but of two nets
    sweep = SweepRuns("mem", "e", "0", one_each[0], one_each, store=None)  # type: ignore[arg-type]
    report = ReportFolder(tmp_path)
    _degradation(sweep, one_each, grid, report)
    assert report.skipped == [
        ("degradation.png", "no configuration finished at two depths or more")
    ]
    assert not (tmp_path / "degradation.png").exists()
    both = [*one_each, run(2, 4, "identity")]  # identity at 2 and 4: its line alone
    report = ReportFolder(tmp_path, keep=True)
    _degradation(sweep, both, grid, report)
    assert report.drawn == ["degradation.png", "degradation.csv"]
    lines = [ln for ax in report.figures["degradation.png"].axes for ln in ax.get_lines()]
    assert {ln.get_label() for ln in lines} == {"(all)"}  # one configuration: nothing varies
    assert len(lines) == 2  # train and test error, two depths each
