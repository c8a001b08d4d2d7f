"""Checkpoints: a stack's whole training state at the end of an epoch, and resuming from one.

A checkpoint holds what the next epoch reads: the networks' weights and buffers (the stack's),
the optimizer's state (momentum, Adam's moments), the lr schedule and warm-up state, every
generator (each member's shuffle and augmentation generators, torch's global one that dropout and
stochastic depth draw from, CUDA's where used), each member's last report, last finite loss and
whether it is still training, and the epoch. The data order needs no position of its own: a
checkpoint is taken at the end of an epoch, and the next epoch's order is the shuffle generator's
next draw. Resumed from epoch k, a trial on the CPU ends with the same weights and metrics, bit for
bit, as the trial that was never stopped (tests/test_checkpoint.py).

Files are written atomically (a temporary file in the same folder, flushed, then renamed over the
old one) and read with ``torch.load(weights_only=True)``: plain tensors, numbers, strings, lists
and dicts only. :class:`Checkpoints` keeps the newest two of a trial, so that a checkpoint found
corrupt or truncated falls back to the one before it (or to epoch 0), with a warning, not a crash.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import torch

if TYPE_CHECKING:
    from resablate.trial.batched import Stack
    from resablate.trial.stack_optim import StackOptimizer


class Member(Protocol):
    """What a checkpoint keeps of one network of a stack (train.Member)."""

    shuffle: torch.Generator
    augment: torch.Generator | None
    result: dict[str, Any]
    last_finite: float


M = TypeVar("M", bound=Member)


FORMAT = 2  # the layout of a checkpoint's dict; a file of another format is not resumed from
KEEP = 2  # checkpoints kept per trial: the newest and the one before it
EVERY_SECONDS = 600.0  # a trial loses at most this much work ...
EVERY_FRACTION = 0.1  # ... and at most this share of its epochs, ...
MIN_SECONDS = 60.0  # ... or this much work, when that share of its epochs takes less


def default_every(epochs: int) -> int:
    """Epochs between checkpoints by default: a tenth of the trial's epochs (at least 1)."""
    return max(1, math.ceil(epochs * EVERY_FRACTION))


def capture(
    epoch: int,
    stack: Stack,
    steps: StackOptimizer,
    members: Sequence[Member],
    live: Sequence[Member],
) -> dict[str, Any]:
    """The training state at the end of ``epoch``, as a dict ``torch.save`` writes: views of
    the live tensors, no copies, so it is written before training goes on."""
    device = _device(stack)
    # the trial's own GPU only: a resume may see fewer GPUs (each Ray worker sees its own)
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {
        "format": FORMAT,
        "epoch": epoch,
        "stack": {k: v.detach() for k, v in stack.state_dict().items()},
        "steps": steps.state_dict(),  # each part's optimizer and lr schedule
        "rng": torch.get_rng_state(),
        "cuda_rng": cuda,
        "members": [
            {
                "shuffle": m.shuffle.get_state(),
                "augment": None if m.augment is None else m.augment.get_state(),
                "result": m.result,
                "last_finite": m.last_finite,
                "live": m in live,
            }
            for m in members
        ],
    }


def _device(stack: Stack) -> torch.device:
    """Where the stack's weights live (its trial's device)."""
    first = next(iter(stack.parameters()), None)
    return torch.device("cpu") if first is None else first.device


def restore(
    saved: dict[str, Any],
    stack: Stack,
    steps: StackOptimizer,
    members: Sequence[M],
) -> tuple[int, list[M]]:
    """Put ``saved`` back into a freshly built trial: (its epoch, the members still training)."""
    if saved.get("format") != FORMAT or len(saved["members"]) != len(members):
        raise ValueError("the checkpoint is of another format or another stack")
    stack.load_state_dict(saved["stack"])
    steps.load_state_dict(saved["steps"])
    torch.set_rng_state(saved["rng"])
    cuda = saved["cuda_rng"]
    if isinstance(cuda, list):  # written before: every visible GPU's, the trial's first
        cuda = cuda[0] if cuda else None
    device = _device(stack)
    if cuda is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda, device)
    for member, state in zip(members, saved["members"], strict=True):
        member.shuffle.set_state(state["shuffle"])
        if member.augment is not None and state["augment"] is not None:
            member.augment.set_state(state["augment"])
        member.result = state["result"]
        member.last_finite = state["last_finite"]
    return int(saved["epoch"]), [
        m for m, s in zip(members, saved["members"], strict=True) if s["live"]
    ]


def write(path: Path, state: dict[str, Any]) -> None:
    """``state`` into ``path`` atomically: a reader sees the old file or the new one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def read(path: Path) -> dict[str, Any]:
    """A checkpoint file back (tensors on the CPU); raises ValueError when it is not one."""
    with path.open("rb") as handle:
        return load(handle, str(path))


def load(handle: Any, where: str) -> dict[str, Any]:
    """A checkpoint from an open file, with ``torch.load(weights_only=True)``: tensors, numbers,
    strings, lists and dicts only. Raises ValueError when it is not a whole checkpoint."""
    try:
        found = torch.load(handle, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupted, or not a torch file at all
        raise ValueError(f"{where}: unreadable checkpoint ({type(exc).__name__})") from None
    if not isinstance(found, dict) or found.get("format") != FORMAT:
        raise ValueError(f"{where}: not a resablate checkpoint of format {FORMAT}")
    return found


@dataclass(kw_only=True)
class Cadence:
    """When the end of an epoch is a checkpoint (:meth:`due`), and where one goes (:meth:`save`:
    files in a folder, :class:`Checkpoints`; Ray Tune's ``Checkpoint``, tuning.py).

    Due: at the end of the epoch a stop is requested in (``stopping()``); at the last epoch only
    when ``final`` (a finished trial's checkpoint is kept only with train.keep_checkpoint); when
    :data:`EVERY_SECONDS` have passed since the last one; and every ``every`` epochs when it is
    set. By default (``every`` None), once :func:`default_every` epochs (a tenth of the trial's)
    have passed since the last one, unless that was less than :data:`MIN_SECONDS` ago: a trial
    loses at most a tenth of its epochs or a minute, whichever is more, and never more than ten
    minutes (and the epoch running); a trial of seconds is not slowed by checkpoints it could
    only lose seconds without."""

    every: int | None = None
    stopping: Callable[[], bool] | None = None  # a stop was requested
    final: bool = True
    saved_at: float = field(default_factory=time.monotonic)
    saved_epoch: int = 0  # the epoch of the last checkpoint (or the one resumed from)

    def due(self, epoch: int, last: int) -> bool:
        if self.stopping is not None and self.stopping():
            return True
        if epoch == last:
            return self.final
        since = time.monotonic() - self.saved_at
        if since >= EVERY_SECONDS:
            return True
        if self.every is not None:
            return epoch % self.every == 0
        return epoch - self.saved_epoch >= default_every(last) and since >= MIN_SECONDS

    def saved(self, epoch: int) -> None:
        """Note that the checkpoint of ``epoch`` was saved (a subclass's :meth:`save` calls it)."""
        self.saved_at, self.saved_epoch = time.monotonic(), epoch

    def save(self, state: dict[str, Any]) -> None:
        raise NotImplementedError  # a subclass says where a checkpoint goes


@dataclass
class Checkpoints(Cadence):
    """A trial's checkpoints in ``folder``: ``epoch_<k>.pt``, the newest :data:`KEEP` kept
    (the inline runner's; on Ray Tune they go through Tune's ``Checkpoint``)."""

    folder: Path

    def save(self, state: dict[str, Any]) -> None:
        write(self.folder / name(state["epoch"]), state)
        self.saved(state["epoch"])
        for old in self.files()[KEEP:]:
            old.unlink(missing_ok=True)

    def files(self) -> list[Path]:
        """The checkpoint files, newest first."""
        found = [p for p in self.folder.glob("epoch_*.pt") if epoch_of(p.name) is not None]
        return sorted(found, key=lambda p: epoch_of(p.name) or 0, reverse=True)

    def latest(self) -> dict[str, Any] | None:
        """The newest checkpoint that reads back whole (:func:`find`)."""
        return find(str(self.folder))

    def clear(self) -> None:
        """Delete the trial's checkpoints (a finished trial keeps none)."""
        remove(str(self.folder))


# -- checkpoints where they are kept: a local folder, or a URI (s3://, gs://) -------------------


def name(epoch: int) -> str:
    """The file name of the checkpoint of ``epoch``."""
    return f"epoch_{epoch}.pt"


def epoch_of(filename: str) -> int | None:
    """The epoch of a checkpoint file's name (None: not a checkpoint's name)."""
    stem, _, suffix = filename.partition(".")
    if suffix != "pt" or not stem.startswith("epoch_") or not stem[6:].isdigit():
        return None
    return int(stem[6:])


def filesystem(location: str) -> tuple[Any, str]:
    """(pyarrow file system, path in it) of a folder or URI, as Ray Tune opens its storage."""
    import pyarrow.fs

    if "://" in location:
        return pyarrow.fs.FileSystem.from_uri(location)
    return pyarrow.fs.LocalFileSystem(), str(Path(location).resolve())


def listing(location: str, fs: Any = None) -> list[tuple[int, str, int]]:
    """(epoch, path, bytes) of every checkpoint file under ``location`` (in it, or in Ray Tune's
    ``checkpoint_<n>`` folders in it), newest first; none when the folder does not exist.
    ``fs``: the pyarrow file system ``location`` is a path of (default: from ``location``)."""
    import pyarrow.fs

    fs, root = (fs, location) if fs is not None else filesystem(location)
    selector = pyarrow.fs.FileSelector(root, recursive=True, allow_not_found=True)
    found = []
    for info in fs.get_file_info(selector):
        epoch = epoch_of(info.base_name) if info.type == pyarrow.fs.FileType.File else None
        if epoch is not None:
            found.append((epoch, info.path, int(info.size or 0)))
    return sorted(found, reverse=True)


def find(location: str, upto: int | None = None, fs: Any = None) -> dict[str, Any] | None:
    """The newest checkpoint under ``location`` (of an epoch up to ``upto``) that reads back
    whole; one that does not is said and skipped: the trial then resumes from the one before
    it, or starts from epoch 0. Never raises for a missing or damaged checkpoint."""
    import io

    try:
        files = listing(location, fs)
        fs = fs if fs is not None else filesystem(location)[0]
    except OSError as exc:  # the storage cannot be listed (gone, no access): start afresh
        warnings.warn(f"{location}: checkpoints unreadable ({exc}); from epoch 0", stacklevel=2)
        return None
    for epoch, path, _ in files:
        if upto is not None and epoch > upto:
            continue
        try:
            with fs.open_input_file(path) as handle:
                return load(io.BytesIO(handle.read()), path)
        except (OSError, ValueError) as exc:
            warnings.warn(f"{exc}; resuming from the checkpoint before it", stacklevel=2)
    return None


def remove(location: str, fs: Any = None) -> int:
    """Delete the checkpoints under ``location`` (Tune's ``checkpoint_<n>`` folders whole);
    returns the bytes freed."""
    fs = fs if fs is not None else filesystem(location)[0]
    freed = 0
    for _, path, size in listing(location, fs):
        parent, _, _ = path.rpartition("/")
        if parent.rpartition("/")[2].startswith("checkpoint_"):
            fs.delete_dir(parent)
        else:
            fs.delete_file(path)
        freed += size
    return freed
