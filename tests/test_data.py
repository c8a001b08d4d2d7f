"""Data sets: fixed seeded splits, image shapes, normalization, whitening, torchvision files,
subsets and on-device augmentation."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets
from sklearn.datasets import load_digits

from resablate.errors import ConfigError, SpecError, UserError
from resablate.spec.schema import DataSpec
from resablate.sweep.plan import make_plan
from resablate.trial import data, vision_sets
from tests.conftest import write


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    data.load.cache_clear()  # specs with root=None resolve through the environment
    yield
    data.load.cache_clear()


def test_digits_are_images_with_the_same_split_and_per_pixel_standardization() -> None:
    t = data.load(DataSpec(name="digits"))
    assert t.x_train.shape == (1348, 1, 8, 8) and t.x_test.shape == (449, 1, 8, 8)
    assert t.shape == data.DataShape((1, 8, 8), 10) and t.augment is False
    assert t.x_train.dtype == torch.float32 and t.y_train.dtype == torch.int64
    # the split and the standardization computed by hand, as before images
    digits = load_digits()
    order = np.random.default_rng(0).permutation(1797)
    test, train = order[:449], order[449:]
    mean, std = digits.data[train].mean(0), digits.data[train].std(0)
    std[std < 1e-8] = 1.0
    expected = (digits.data[test] - mean) / std
    assert torch.equal(t.y_train, torch.from_numpy(digits.target[train]))
    assert torch.equal(t.y_test, torch.from_numpy(digits.target[test]))
    assert torch.allclose(
        t.x_test.reshape(449, 64).double(), torch.from_numpy(expected), atol=1e-6
    )
    assert t.x_train.mean(0).abs().max().item() < 1e-5
    data.load.cache_clear()
    again = data.load(DataSpec(name="digits"))
    assert torch.equal(again.x_test, t.x_test) and torch.equal(again.y_train, t.y_train)
    other = data.load(DataSpec(name="digits", split_seed=1))
    assert not torch.equal(other.y_test, t.y_test)


def test_whitening_gives_unit_covariance_on_the_training_set() -> None:
    t = data.load(DataSpec(name="digits", whiten=10))
    assert t.x_train.shape == (1348, 10) and t.shape.input_shape == (10,)
    cov = t.x_train.T.double() @ t.x_train.double() / len(t.x_train)
    assert torch.allclose(cov, torch.eye(10, dtype=torch.float64), atol=1e-4)


def test_synthetic_teacher_labels_are_deterministic() -> None:
    spec = DataSpec(name="synthetic", samples=400, features=12, classes=3)
    t = data.load(spec)
    assert t.x_train.shape == (300, 12) and t.shape == data.DataShape((12,), 3)
    assert set(t.y_train.unique().tolist()) == {0, 1, 2}
    data.load.cache_clear()
    assert torch.equal(data.load(spec).y_train, t.y_train)


# --- torchvision sets, through the real torchvision classes --------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX format of MNIST's raw files: magic (0, 0, 0x08 = ubyte, ndim), sizes, bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fake_mnist(root: Path, folder: str) -> dict[str, np.ndarray]:
    """30 training and 10 test images of 28×28 where torchvision's MNIST class reads them."""
    rng = np.random.default_rng(7)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (30, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(30) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (10, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(10)[::-1],
    }
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for name, array in arrays.items():
        write_idx(raw / name, array)
    return arrays


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_files_load_as_normalized_images(tmp_path: Path, name: str, folder: str) -> None:
    arrays = fake_mnist(tmp_path, folder)
    spec = DataSpec(name=name, root=str(tmp_path))
    data.prepare(spec)  # files present: nothing to download, and they load
    t = data.load(spec)
    assert t.x_train.shape == (30, 1, 28, 28) and t.x_test.shape == (10, 1, 28, 28)
    assert t.shape == data.DataShape((1, 28, 28), 10) and t.augment is False
    assert t.y_train.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert t.y_test.tolist() == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert abs(t.x_train.mean().item()) < 1e-5
    assert t.x_train.std(correction=0).item() == pytest.approx(1.0, abs=1e-5)
    # the test set is normalized with the training set's statistics
    raw_train = arrays["train-images-idx3-ubyte"].astype(np.float64)
    expected = (arrays["t10k-images-idx3-ubyte"] - raw_train.mean()) / raw_train.std()
    assert torch.allclose(t.x_test[:, 0].double(), torch.from_numpy(expected), atol=1e-4)


def test_mnist_subset_and_whitening(tmp_path: Path) -> None:
    arrays = fake_mnist(tmp_path, "MNIST")
    t = data.load(DataSpec(name="mnist", root=str(tmp_path), subset=10, whiten=5))
    keep = np.random.default_rng(0).permutation(30)[:10]
    assert t.x_train.shape == (10, 5) and t.x_test.shape == (10, 5)
    assert t.y_train.tolist() == arrays["train-labels-idx1-ubyte"][keep].tolist()


def test_root_falls_back_to_env_then_to_data_in_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RESABLATE_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert vision_sets.data_root(DataSpec(name="mnist")) == tmp_path.resolve() / "data"
    assert (
        vision_sets.data_root(DataSpec(name="mnist", root="sets")) == tmp_path.resolve() / "sets"
    )
    fake_mnist(tmp_path / "elsewhere", "MNIST")
    monkeypatch.setenv("RESABLATE_DATA", str(tmp_path / "elsewhere"))
    assert data.load(DataSpec(name="mnist")).x_train.shape == (30, 1, 28, 28)


def test_shapes_need_no_files(tmp_path: Path) -> None:
    for name, shape, classes in [
        ("mnist", (1, 28, 28), 10),
        ("fashion_mnist", (1, 28, 28), 10),
        ("cifar10", (3, 32, 32), 10),
        ("cifar100", (3, 32, 32), 100),
    ]:
        spec = DataSpec(name=name, root=str(tmp_path / "nothing"))
        assert data.DATASETS[name].shape(spec) == data.DataShape(shape, classes)
        assert data.DATASETS[name].augments(spec) is name.startswith("cifar")
        assert data.DATASETS[name].shape(spec.model_copy(update={"whiten": 10})).input_shape == (
            10,
        )
        assert not data.DATASETS[name].augments(spec.model_copy(update={"whiten": 10}))
    assert not (tmp_path / "nothing").exists()
    data.prepare(DataSpec(name="digits", root=str(tmp_path / "nothing")))  # bundled: no-op
    assert not (tmp_path / "nothing").exists()


def test_expected_file_names_are_torchvisions() -> None:
    vision = {v.name: v for v in vision_sets.TORCHVISION}
    for name, mnist_like in [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]:
        cls = getattr(torchvision.datasets, mnist_like)
        assert vision[name].folder == f"{mnist_like}/raw"
        assert vision[name].files == tuple(gz.removesuffix(".gz") for gz, _ in cls.resources)
    for name, cifar in [("cifar10", "CIFAR10"), ("cifar100", "CIFAR100")]:
        cls = getattr(torchvision.datasets, cifar)
        assert vision[name].folder == cls.base_folder
        batches = [file for file, _ in cls.train_list + cls.test_list]
        assert vision[name].files == (*batches, cls.meta["filename"])


def route_through(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    """Send every URL through a proxy at 127.0.0.1:``port``, whatever the machine's network."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{port}")
    urllib.request.install_opener(None)  # urlopen's opener read the proxies of its first call


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No network: the proxy port is closed, so every connection is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    route_through(monkeypatch, port)
    yield
    monkeypatch.undo()
    urllib.request.install_opener(None)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100"])
def test_missing_files_give_one_line_naming_folder_files_and_fix(
    tmp_path: Path, offline: None, name: str
) -> None:
    vision = {v.name: v for v in vision_sets.TORCHVISION}[name]
    spec = DataSpec(name=name, root=str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(UserError) as prepared:
        data.prepare(spec)
    assert time.perf_counter() - start < 10
    with pytest.raises(UserError) as loaded:
        data.load(spec)
    folder = str(tmp_path.resolve() / vision.folder)
    for error in (str(prepared.value), str(loaded.value)):
        assert "\n" not in error
        assert error.startswith(f"data set {name} is not in {folder}")
        assert f"torchvision expects the files {', '.join(vision.files)} there" in error
        assert "copy them into that folder, or set data.root (or RESABLATE_DATA)" in error
    assert "downloading them failed" in str(prepared.value)
    assert "downloading" not in str(loaded.value)


CIFAR_SWEEP = "name: c\nmodel: {family: cifar, depth: 8}\ndata: {name: cifar10, root: %s}\n"


def test_plan_says_when_the_data_cannot_be_fetched_and_nothing_is_left_behind(
    tmp_path: Path, offline: None, cli
) -> None:
    root = tmp_path / "sets" / "here"
    sweep = tmp_path / "c.yaml"
    sweep.write_text(CIFAR_SWEEP % root)
    planned = cli("plan", str(sweep))
    assert planned.code == 2 and planned.err.count("\n") == 1, planned.err
    assert planned.err.startswith(f"resablate: error: data set cifar10 is not in {root}")
    assert "cannot reach www.cs.toronto.edu (through the proxy 127.0.0.1:" in planned.err
    assert not (tmp_path / "sets").exists() and not planned.out
    assert planned.err.rstrip().endswith("a sweep that runs elsewhere: plan --no-data-check")
    assert cli("plan", str(sweep), "--no-data-check").code == 0  # (where the files are)
    ran = cli("sweep", str(sweep), "--inline", "-q")  # its download fails: no empty folder left
    assert ran.code == 2 and "downloading them failed" in ran.err
    assert not (tmp_path / "sets").exists()


def test_plan_notes_a_data_set_its_sweep_will_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    with socket.socket() as proxy:  # a proxy that accepts: the server is reachable
        proxy.bind(("127.0.0.1", 0))
        proxy.listen(16)
        route_through(monkeypatch, proxy.getsockname()[1])
        sweep = tmp_path / "c.yaml"
        sweep.write_text(CIFAR_SWEEP % (tmp_path / "d"))
        planned = cli("plan", str(sweep))
    assert planned.code == 0, planned.err
    folder = tmp_path / "d" / "cifar-10-batches-py"
    assert f"data set cifar10 is not in {folder} yet: sweep downloads it from" in planned.err
    assert not (tmp_path / "d").exists()


def test_a_hanging_network_fails_within_the_socket_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy that accepts connections and never answers, like a firewall that drops packets:
    without a socket timeout torchvision's download would wait for minutes."""
    monkeypatch.setattr(vision_sets, "DOWNLOAD_TIMEOUT_S", 1.0)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        route_through(monkeypatch, silent.getsockname()[1])
        try:
            for name in ("mnist", "cifar10"):
                start = time.perf_counter()
                with pytest.raises(UserError, match=r"downloading them failed.*timed out"):
                    data.prepare(DataSpec(name=name, root=str(tmp_path)))
                assert 1.0 <= time.perf_counter() - start < 8
        finally:
            monkeypatch.undo()
            urllib.request.install_opener(None)
    assert socket.getdefaulttimeout() is None  # restored


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_files_that_fail_the_checksum_are_named_and_never_downloaded_over(
    tmp_path: Path, offline: None, name: str
) -> None:
    """torchvision would download the archive again over a user's files whose md5 fails (and
    offline say only that the download failed): the files are named, nothing is fetched."""
    vision = {v.name: v for v in vision_sets.TORCHVISION}[name]
    folder = tmp_path / vision.folder
    folder.mkdir()
    for file in vision.files:
        (folder / file).write_bytes(b"not the original")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(UserError) as failed:
        data.prepare(DataSpec(name=name, root=str(tmp_path)))
    error = str(failed.value)
    assert error.startswith(
        f"data set {name}: the files {', '.join(vision.files)} in {folder.resolve()} fail"
        " torchvision's integrity check (md5)"
    )
    assert "download" in error and "failed" not in error and "\n" not in error
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_mnist_files_that_are_there_are_not_fetched_again(tmp_path: Path, offline: None) -> None:
    fake_mnist(tmp_path, "MNIST")
    data.prepare(DataSpec(name="mnist", root=str(tmp_path)))  # offline, and no download tried
    (tmp_path / "MNIST" / "raw" / vision_sets.MNIST_FILES[0]).unlink()
    with pytest.raises(
        UserError, match=r"\(missing: train-images-idx3-ubyte\).*does not download"
    ):
        data.prepare(DataSpec(name="mnist", root=str(tmp_path)))


def test_unreadable_files_are_a_user_error_too(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in vision_sets.MNIST_FILES:
        (raw / name).write_bytes(b"not idx")
    with pytest.raises(UserError, match=f"data set mnist could not be read from {raw}"):
        data.load(DataSpec(name="mnist", root=str(tmp_path)))


# --- subsets and config errors -------------------------------------------------------------------


def test_subset_keeps_a_seeded_part_of_the_training_set() -> None:
    full = data.load(DataSpec(name="digits"))
    t = data.load(DataSpec(name="digits", subset=100))
    assert t.x_train.shape == (100, 1, 8, 8) and len(t.y_train) == 100
    assert torch.equal(t.y_test, full.y_test)  # the test set stays whole
    keep = torch.from_numpy(np.random.default_rng(0).permutation(1348)[:100])
    assert torch.equal(t.y_train, full.y_train[keep])
    assert t.x_train.mean(0).abs().max().item() < 1e-5  # normalized on the examples kept
    data.load.cache_clear()
    assert torch.equal(data.load(DataSpec(name="digits", subset=100)).x_train, t.x_train)
    smaller = data.load(DataSpec(name="digits", subset=40))
    assert torch.equal(smaller.y_train, t.y_train[:40])  # a smaller subset is part of a larger
    other = data.load(DataSpec(name="digits", subset=100, split_seed=1))
    assert not torch.equal(other.y_train, t.y_train)
    synthetic = data.load(DataSpec(name="synthetic", samples=100, subset=10))
    assert synthetic.x_train.shape == (10, 20) and synthetic.x_test.shape == (25, 20)


@pytest.mark.parametrize(
    "spec,field,text",
    [
        (DataSpec(name="digits", subset=1349), "data.subset", "digits has 1348; use at most 1348"),
        (DataSpec(name="mnist", subset=60_001), "data.subset", "use at most 60000"),
        (DataSpec(name="synthetic", augment=True), "data.augment", "flat inputs of shape (20,)"),
        (DataSpec(name="cifar10", whiten=10, augment=True), "data.augment", "whitened"),
        (DataSpec(name="digits", whiten=65), "data.whiten", "use at most 64"),
        (
            DataSpec(name="digits", subset=1214, validation=0.1),
            "data.subset",
            "digits has 1213 once data.validation holds out 135; use at most 1213",
        ),
        (
            DataSpec(name="synthetic", samples=10, validation=0.95),
            "data.validation",
            "0.95 of synthetic's 8 training examples leaves none to train on",
        ),
    ],
)
def test_config_errors_name_the_field(spec: DataSpec, field: str, text: str) -> None:
    with pytest.raises(ConfigError) as error:
        data.DATASETS[spec.name].shape(spec)
    assert error.value.field == field and text in str(error.value)


def test_sweep_file_errors_for_the_new_fields(tmp_path: Path) -> None:
    sweep = tmp_path / "s.yaml"
    for text, expected in [
        (
            "{name: synthetic, augment: true}",
            "data.augment: augmentation (pad, crop, flip) needs image inputs but synthetic gives"
            " flat inputs of shape (20,); set data.augment: false",
        ),
        ("{subset: 5}", "data.subset: 5: input should be greater than or equal to 10"),
        (
            "{subset: 2000}",
            "data.subset: 2000 training examples asked but digits has 1348; use at most 1348",
        ),
        ("{root: ''}", "data.root: '': string should have at least 1 character"),
        ("{validation: 1}", "data.validation: 1: input should be less than 1"),
        ("{validation: 0}", "data.validation: 0: input should be greater than 0"),
    ]:
        with pytest.raises(SpecError) as error:
            make_plan(write(sweep, f"name: x\ndata: {text}\n"))
        assert str(error.value) == f"{sweep}: {expected}"
    plan = make_plan(write(sweep, "name: x\ndata: {augment: true, subset: 50}\n"))
    assert plan.trials[0].config["data"]["augment"] is True  # digits images may be augmented
    assert data.load(DataSpec(augment=True, subset=50)).augment is True


# --- augmentation --------------------------------------------------------------------------------


def by_hand(x: torch.Tensor, dy: int, dx: int, flip: bool) -> torch.Tensor:
    """One image (C, H, W) padded with 4 zeros each side, the H×W window at (dy, dx), flipped."""
    c, h, w = x.shape
    padded = torch.zeros(c, h + 8, w + 8, dtype=x.dtype)
    padded[:, 4 : 4 + h, 4 : 4 + w] = x
    window = padded[:, dy : dy + h, dx : dx + w]
    return window.flip(2) if flip else window


def test_augment_batch_is_a_shifted_maybe_flipped_copy_computed_by_hand() -> None:
    x = torch.arange(1, 16 * 3 * 5 * 7 + 1, dtype=torch.float32).reshape(16, 3, 5, 7)
    out = data.augment_batch(x, torch.Generator().manual_seed(3))
    assert out.shape == x.shape and out.dtype == x.dtype
    # the documented draws: offsets (N, 2) in 0..8, then flips (N,)
    generator = torch.Generator().manual_seed(3)
    offsets = torch.randint(0, 9, (16, 2), generator=generator)
    flips = torch.rand(16, generator=generator) < 0.5
    for i in range(16):
        dy, dx = offsets[i].tolist()
        assert torch.equal(out[i], by_hand(x[i], dy, dx, bool(flips[i])))
    assert torch.equal(out, data.augment_batch(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(out, data.augment_batch(x, torch.Generator().manual_seed(4)))


def test_augment_batch_draws_every_shift_and_flips_about_half() -> None:
    image = torch.arange(1, 2 * 6 * 5 + 1, dtype=torch.float32).reshape(2, 6, 5)
    candidates = torch.stack(
        [by_hand(image, dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (0, 1)]
    )  # (162, C, H, W), all distinct: pixel values are unique and nonzero
    n = 4000
    out = data.augment_batch(image.expand(n, 2, 6, 5), torch.Generator().manual_seed(0))
    matches = (out[:, None] == candidates[None]).flatten(2).all(dim=2)  # (n, 162)
    assert (matches.sum(dim=1) == 1).all()  # each output is exactly one shifted copy
    which = matches.float().argmax(dim=1)
    assert 0.45 < (which % 2).float().mean().item() < 0.55  # flipped
    assert len(set((which // 2).tolist())) == 81  # every (dy, dx) in 0..8 × 0..8
