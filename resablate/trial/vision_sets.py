"""Torchvision's data sets (MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100): their official splits,
the files torchvision reads under ``data.root``, and how those are checked, downloaded and read.

Files already in the folder are the user's and never downloaded over; every failure is one
line naming the folder, the files expected there and the fix. :mod:`resablate.trial.data`
registers each set of :data:`TORCHVISION` as a data set.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from resablate.errors import UserError

if TYPE_CHECKING:
    from resablate.spec.schema import DataSpec

DOWNLOAD_TIMEOUT_S = 5.0  # per socket operation: an offline machine fails in seconds, not minutes
TORCHVISION_TEST = 10_000  # the official test split of every set below
# x_train, y_train, x_test, y_test (data.Splits): images (n, C, H, W) float32, labels int64
Images = tuple[Tensor, Tensor, Tensor, Tensor]


def data_root(spec: DataSpec) -> Path:
    """The absolute folder torchvision reads: ``data.root``, else $RESABLATE_DATA, else ./data."""
    root = spec.root or os.environ.get("RESABLATE_DATA") or "data"
    return Path(root).expanduser().resolve()


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # torchvision's urlopen calls pass no timeout: a firewalled machine would hang for minutes
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


@dataclass(frozen=True)
class Torchvision:
    """A ``torchvision.datasets`` class, its sizes and the files it reads."""

    name: str  # the YAML name
    dataset: str  # class in torchvision.datasets
    input_shape: tuple[int, int, int]
    classes: int
    train_size: int  # official training split; the official test split is the test set
    folder: str  # where under data.root torchvision looks for the files
    files: tuple[str, ...]  # what it expects there
    fetch: str  # how to get them by hand

    def missing(self, spec: DataSpec) -> list[str]:
        folder = data_root(spec) / self.folder
        return [name for name in self.files if not (folder / name).is_file()]

    def error(self, spec: DataSpec, failure: str) -> UserError:
        """One line: the data set, the folder, the files expected there, what failed, the fix."""
        folder = data_root(spec) / self.folder
        missing = self.missing(spec)
        if missing:
            lacks = "" if len(missing) == len(self.files) else f" (missing: {', '.join(missing)})"
            problem = f"data set {self.name} is not in {folder}{lacks}"
        else:
            problem = f"data set {self.name} could not be read from {folder}"
        return UserError(
            f"{problem}{failure}; torchvision expects the files {', '.join(self.files)} there:"
            f" download them elsewhere ({self.fetch}) and copy them into that folder, or set"
            f" data.root (or RESABLATE_DATA) to a folder that holds {self.folder}"
        )

    def _read(self, spec: DataSpec, download: bool) -> Images:
        import torchvision.datasets

        cls = getattr(torchvision.datasets, self.dataset)
        root = str(data_root(spec))
        train = cls(root, train=True, download=download)
        test = cls(root, train=False)
        return (*_images(train.data, train.targets), *_images(test.data, test.targets))

    def corrupt(self, spec: DataSpec) -> list[str]:
        """The files that fail torchvision's integrity check (the md5 sums its CIFAR classes
        hold; its MNIST classes check none once unpacked)."""
        import torchvision.datasets
        from torchvision.datasets.utils import check_integrity

        cls = getattr(torchvision.datasets, self.dataset)
        sums = [*getattr(cls, "train_list", []), *getattr(cls, "test_list", [])]
        meta = getattr(cls, "meta", None)
        if isinstance(meta, dict):
            sums.append((meta["filename"], meta["md5"]))
        folder = data_root(spec) / self.folder
        return [
            name
            for name, md5 in sums
            if (folder / name).is_file() and not check_integrity(str(folder / name), md5)
        ]

    def splits(self, spec: DataSpec) -> Images:
        try:
            return self._read(spec, download=False)
        except Exception as exc:  # torchvision raises RuntimeError, OSError, ValueError, ...
            raise self.error(spec, "" if self.missing(spec) else _why(exc)) from exc

    def partly_there(self, spec: DataSpec) -> UserError:
        """Some of the files are there, not all: they are the user's, never downloaded over."""
        return self.error(
            spec,
            "; resablate does not download over the files already there (copy the missing ones"
            " in, or delete the folder to download them all)",
        )

    def _source_url(self) -> str:
        import torchvision.datasets

        cls = getattr(torchvision.datasets, self.dataset)
        url = getattr(cls, "url", None) or cls.mirrors[0]
        return str(url)

    def check(self, spec: DataSpec) -> str | None:
        """What ``prepare`` will find, fetching and creating nothing (``resablate plan``): None
        when the files are there, a note when they are not but their server answers; a one-line
        UserError when some are missing or the server cannot be reached."""
        folder = data_root(spec) / self.folder
        missing = self.missing(spec)
        if not missing:
            return None
        if len(missing) < len(self.files):
            raise self.partly_there(spec)
        url = urllib.parse.urlsplit(self._source_url())
        host = url.hostname or ""
        # the download goes through the proxy urllib reads from the environment, if any
        proxy = urllib.request.getproxies().get(url.scheme)
        via = (
            urllib.parse.urlsplit(proxy)
            if proxy and not urllib.request.proxy_bypass(host)
            else url
        )
        port = via.port or (443 if via.scheme == "https" else 80)
        reached = host if via is url else f"{host} (through the proxy {via.hostname}:{port})"
        try:
            socket.create_connection((via.hostname or "", port), DOWNLOAD_TIMEOUT_S).close()
        except OSError as exc:
            raise self.error(
                spec, f" and this machine cannot reach {reached}{_why(exc)}"
            ) from None
        return f"data set {self.name} is not in {folder} yet: sweep downloads it from {reached}"

    def prepare(self, spec: DataSpec) -> None:
        """Download the files where none is there yet (torchvision's own download), then check
        they load. Files already in the folder are the user's: never downloaded over (a failed
        checksum would make torchvision download the archive again and unpack it over them)."""
        folder = data_root(spec) / self.folder
        missing = self.missing(spec)
        if len(missing) < len(self.files):  # some are there: check them, fetch nothing
            bad = self.corrupt(spec)
            if bad:
                raise UserError(
                    f"data set {self.name}: the files {', '.join(bad)} in {folder} fail"
                    " torchvision's integrity check (md5); replace them with the originals"
                    f" ({self.fetch}), or delete the folder to let resablate download it"
                )
            if missing:
                raise self.partly_there(spec)
        fresh = _first_missing(folder)  # what a failed download must not leave behind
        try:
            with _socket_timeout(DOWNLOAD_TIMEOUT_S):
                self._read(spec, download=len(missing) == len(self.files))
        except Exception as exc:
            if fresh is not None:
                shutil.rmtree(fresh, ignore_errors=True)
            if self.missing(spec):
                raise self.error(spec, f" and downloading them failed{_why(exc)}") from exc
            raise self.error(spec, _why(exc)) from exc


def _first_missing(folder: Path) -> Path | None:
    """The outermost of ``folder`` and its parents that does not exist yet (None: it exists)."""
    found, whole = None, folder.absolute()
    for path in (whole, *whole.parents):
        if path.exists():
            return found
        found = path
    return found


def _why(exc: Exception) -> str:
    reason = " ".join(str(exc).split())  # torchvision's download errors span several lines
    return f" ({type(exc).__name__}: {reason[:300]})" if reason else f" ({type(exc).__name__})"


def _images(data: Tensor | np.ndarray, targets: Tensor | list[int]) -> tuple[Tensor, Tensor]:
    """uint8 images as float (n, C, H, W): MNIST's are (n, H, W), CIFAR's (n, H, W, C)."""
    x = torch.as_tensor(data)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    x = x.to(torch.float32, memory_format=torch.contiguous_format)
    return x, torch.as_tensor(targets, dtype=torch.int64)


MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
TORCHVISION = (
    Torchvision(
        "mnist",
        "MNIST",
        (1, 28, 28),
        10,
        60_000,
        "MNIST/raw",
        MNIST_FILES,
        "https://ossci-datasets.s3.amazonaws.com/mnist/, then gunzip them",
    ),
    Torchvision(
        "fashion_mnist",
        "FashionMNIST",
        (1, 28, 28),
        10,
        60_000,
        "FashionMNIST/raw",
        MNIST_FILES,
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/, then gunzip them",
    ),
    Torchvision(
        "cifar10",
        "CIFAR10",
        (3, 32, 32),
        10,
        50_000,
        "cifar-10-batches-py",
        (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"),
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, then unpack it",
    ),
    Torchvision(
        "cifar100",
        "CIFAR100",
        (3, 32, 32),
        100,
        50_000,
        "cifar-100-python",
        ("train", "test", "meta"),
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz, then unpack it",
    ),
)
