"""The networks that :func:`resablate.trial.train.run_stack` trains: a stack of k >= 1 networks.

A stack takes one batch per member, (k, B, ...), and returns each member's outputs,
(k, B, classes), in float32; the training loop is the same for every k.

* :class:`Single` (k = 1) is an ordinary trial's network, run as
  :class:`resablate.trial.compute.Compute` says (bf16 autocast, channels-last, torch.compile).
  Everything a trial supports runs on it: BatchNorm, random layers, probes, an error-driven
  warm-up.
* :class:`Vmapped` (k > 1) holds several trials of one network architecture and data stream
  (:func:`stack_key`: they may differ in seed, init and training recipe, :data:`MAY_DIFFER`):
  their weights stacked (``torch.func.stack_module_state``) and run with ``vmap`` over
  ``functional_call``, one forward and one backward pass per step for all members; each member
  steps with its own trial's optimizer and lr schedule on its slice of the stacked weights
  (:mod:`resablate.trial.stack_optim`). Short trials on CPU spend much of their time in Python and
  per-call overhead, which the stack pays once for all members. Each member gets what its own
  trial would (its initialization, batches, optimizer, lr schedule, loss and reports); results
  agree with separate runs to float tolerance, since stacked matrix products may round
  differently.

Only configurations whose computation is the same for every member can be stacked
(:func:`why_not`): no BatchNorm statistics, no random layers (dropout, stochastic depth), no
warm-up driven by each trial's own training error, default compute settings. Probes run on each
member's own network (:meth:`Stack.network`), unstacked, as a trial's run on a copy of its own.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn

from resablate import models
from resablate.spec.catalog import trial_config
from resablate.spec.grid import cell_id
from resablate.spec.schema import COMPUTE_FIELDS, DataSpec, TrainSpec, TrialConfig
from resablate.trial.data import DataShape
from resablate.trial.stack_optim import RECIPE

if TYPE_CHECKING:
    from resablate.trial.compute import Compute


class Stack(Protocol):
    """k networks trained as one: what the training loop needs of them."""

    size: int  # k

    def __call__(self, x: Tensor) -> Tensor:
        """(k, B, ...) -> (k, B, classes) float32: member i's outputs on its batch x[i]."""
        ...

    def evaluate(self, x: Tensor) -> Tensor:
        """(B, ...) -> (k, B, classes) float32: every member's outputs on the same batch."""
        ...

    def parameters(self) -> Iterable[Tensor]: ...

    def train(self, mode: bool) -> None:
        """Training (True) or evaluation mode, as ``nn.Module.train``."""
        ...

    def network(self, index: int = 0) -> nn.Module:
        """Member ``index``'s network as a module of its own (until the next call), for
        probes (which run on a copy, or only read it: what they do does not reach the
        stack)."""
        ...

    def same(self, i: int, j: int) -> bool:
        """Whether members ``i`` and ``j`` hold bit-identical weights and buffers now."""
        ...

    def state_dict(self) -> dict[str, Tensor]:
        """Every weight and buffer (a checkpoint's)."""
        ...

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Back from :meth:`state_dict`, into the tensors the optimizer holds."""
        ...


class Modes:
    """``net.train(mode)`` for a network whose modules stay as they are: the flag set on each
    module directly (a sixth of the cost of train()'s recursion, paid twice an epoch), or by
    train() itself where a module overrides it."""

    def __init__(self, net: nn.Module) -> None:
        self.net, self.modules = net, list(net.modules())
        self.direct = all(type(m).train is nn.Module.train for m in self.modules)

    def __call__(self, mode: bool) -> None:
        if not self.direct:
            self.net.train(mode)
            return
        for module in self.modules:
            # Module.__setattr__ ends here, after lookups that cost 8x (246 modules: 45 µs, or
            # 374 µs with `module.training = mode`, 802 µs with train()), twice an epoch
            object.__setattr__(module, "training", mode)


class Single:
    """A stack of one: the trial's network, its forward pass as ``compute`` makes it."""

    size = 1

    def __init__(self, net: nn.Module, compute: Compute) -> None:
        self.compute = compute
        self.net, self.forward = compute.model(net)
        self.modes = Modes(self.net)

    def __call__(self, x: Tensor) -> Tensor:
        with self.compute.autocast():
            out = self.forward(self.compute.batch(x[0]))  # (B, classes)
        return out.float()[None]

    def evaluate(self, x: Tensor) -> Tensor:
        with self.compute.autocast():
            out = self.net(self.compute.batch(x))  # uncompiled: eval mode is a second graph
        return out.float()[None]

    def parameters(self) -> Iterable[Tensor]:
        return self.net.parameters()

    def train(self, mode: bool) -> None:
        self.modes(mode)

    def network(self, index: int = 0) -> nn.Module:
        if index != 0:
            raise IndexError(f"a stack of one has no member {index}")
        return self.net

    def same(self, i: int, j: int) -> bool:
        return i == j == 0

    def state_dict(self) -> dict[str, Tensor]:
        return self.net.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.net.load_state_dict(state)


class Vmapped:
    """k > 1 networks of one architecture as stacked weights and one vmapped forward pass."""

    def __init__(self, nets: Sequence[nn.Module]) -> None:
        from torch.func import functional_call, stack_module_state, vmap

        shapes = {tuple((k, v.shape) for k, v in net.state_dict().items()) for net in nets}
        if len(shapes) > 1:
            raise ValueError("the networks of a stack must have the same weights and shapes")
        self.size = len(nets)
        self.params, self.buffers = stack_module_state(list(nets))  # type: ignore[arg-type]
        self.skeleton = copy.deepcopy(nets[0]).to("meta")  # the architecture, without weights
        self.modes = Modes(self.skeleton)
        # one real module of the architecture that network() loads a member's weights into
        self.scratch = nets[0]
        own = {**dict(nets[0].named_parameters()), **dict(nets[0].named_buffers())}
        stacked = {**self.params, **self.buffers}
        self.pairs = [(own[name], tensor) for name, tensor in stacked.items()]

        def one(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
            return functional_call(self.skeleton, (p, b), (x,))

        self.each: Callable[..., Tensor] = vmap(one)  # each member its own batch
        self.shared: Callable[..., Tensor] = vmap(one, in_dims=(0, 0, None))

    def __call__(self, x: Tensor) -> Tensor:
        return self.each(self.params, self.buffers, x)

    def evaluate(self, x: Tensor) -> Tensor:
        return self.shared(self.params, self.buffers, x)

    def parameters(self) -> Iterable[Tensor]:
        return self.params.values()

    def train(self, mode: bool) -> None:
        self.modes(mode)

    @torch.no_grad()
    def network(self, index: int = 0) -> nn.Module:
        """Member ``index``'s weights copied into the stack's one scratch module (no new
        module per probe epoch): valid until the next call."""
        for own, stacked in self.pairs:
            own.copy_(stacked[index])
        self.scratch.train(self.skeleton.training)
        return self.scratch

    def same(self, i: int, j: int) -> bool:
        tensors = [*self.params.values(), *self.buffers.values()]
        return all(torch.equal(t[i], t[j]) for t in tensors)

    def state_dict(self) -> dict[str, Tensor]:
        """The stacked weights and buffers, ``param.<name>`` / ``buffer.<name>``."""
        return {
            **{f"param.{k}": v for k, v in self.params.items()},
            **{f"buffer.{k}": v for k, v in self.buffers.items()},
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Copied into the tensors the optimizer holds: they stay the same objects."""
        mine = self.state_dict()
        if set(mine) != set(state):
            raise ValueError("the saved stack has other weights than this one")
        for key, tensor in mine.items():
            tensor.copy_(state[key])


def why_not(config: TrialConfig | dict[str, Any]) -> str | None:
    """Why ``config`` cannot train in a stack with others (None: it can)."""
    cfg = config if isinstance(config, TrialConfig) else trial_config(config)
    if cfg.model.norm != "none":
        return f"model.norm {cfg.model.norm} keeps running statistics per network"
    if cfg.model.drop_path > 0 or cfg.model.shortcut == "dropout":
        return "random layers (drop_path, dropout shortcut) draw per network"
    if cfg.train.warmup_lr is not None:
        return "train.warmup_lr ends at each trial's own training error"
    defaults = TrainSpec.model_fields
    changed = [k for k in COMPUTE_FIELDS if getattr(cfg.train, k) != defaults[k].default]
    if changed:
        return f"train.{changed[0]} is set"
    return None


# What the members of a stack may differ in: the seed, the init (scheme, c, eps, as far as the
# forward pass does not read it: models.init_in_forward) and the training recipe
# (stack_optim.RECIPE, each member its own optimizer), the divergence limit, the recipe preset's
# name. Everything else (model, data, batch size, epochs, loss, compute) is the stack's.
MAY_DIFFER = (
    "seed",
    "init",
    *(f"train.{name}" for name in RECIPE),
    "train.diverge_above",
    "train.recipe",
)


def stack_key(config: TrialConfig | dict[str, Any]) -> str:
    """Trials with the same key can train as one stack (when :func:`why_not` passes): one
    network architecture, the same function of its weights, one data stream."""
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.model_validate(config)
    forward = {"forward": models.init_in_forward(cfg.init)}
    return cell_id({**cfg.model_dump(mode="json"), **forward}, drop=MAY_DIFFER)


def check(configs: Sequence[TrialConfig]) -> None:
    """Raise ValueError unless ``configs`` can train as one stack: one config, or configs that
    differ only in :data:`MAY_DIFFER` and that :func:`why_not` passes."""
    if len(configs) == 1:
        return
    if len({stack_key(c) for c in configs}) > 1:
        raise ValueError(
            "a stack trains configs that differ only in their seed, init and training recipe"
            " (optimizer, lr, momentum, weight decay, lr schedule): the configs differ"
        )
    reason = why_not(configs[0])
    if reason:
        raise ValueError(f"these trials cannot train stacked: {reason}")


EVAL_BATCH = 1024  # test and validation batches are at least this large (no gradients)


def data_bytes(data: DataSpec | dict[str, Any]) -> int:
    """The bytes of the one copy of its data set (a trial's ``data`` section) a stack holds on
    its device: the training, validation and test images in float32 and their int64 labels
    (CIFAR-10: about 0.74 GB)."""
    from resablate.trial.data import DATASETS

    spec = data if isinstance(data, DataSpec) else DataSpec.model_validate(data)
    source = DATASETS[spec.name]
    n = sum(source.sizes(spec))
    return n * (4 * math.prod(source.shape(spec).input_shape) + 8)


def member_bytes(config: TrialConfig | dict[str, Any], slots: int | None = None) -> int:
    """About how much memory one member of a stack takes while it trains, estimated on torch's
    meta device (nothing allocated): its weights, their gradients and ``slots`` tensors of
    optimizer state each (default: its own optimizer's) in float32; twice what its forward
    pass saves for the backward pass at its batch size (each tensor once; the backward pass
    makes a gradient of each), or, where more, the largest of those twice over at the evaluation
    batch size (an evaluation, after the backward pass freed them, holds a layer's input and
    output at once). The data set is the stack's, held once, not a member's. Measured on CPU
    (tests/test_stack_optim.py): a CIFAR ResNet-8 at batch 128 takes 77 MB a member, 84 MB
    estimated."""
    from resablate.trial.data import DATASETS
    from resablate.trial.optim import state_slots

    cfg = config if isinstance(config, TrialConfig) else trial_config(config)
    source = DATASETS[cfg.data.name]
    shape = source.shape(cfg.data)
    n, held, test = source.sizes(cfg.data)
    batch = n if cfg.train.batch_size == "full" else min(cfg.train.batch_size, n)
    tested = min(max(batch, EVAL_BATCH), max(test, held))  # the largest evaluation batch
    saved, largest = 0, 0
    with torch.device("meta"):
        net = models.FAMILIES[cfg.model.family].build(cfg.model, cfg.init, shape)
        seen: dict[int, Tensor] = {id(p): p for p in net.parameters()}  # held: ids stay unique

        def pack(tensor: Tensor) -> Tensor:
            nonlocal saved, largest
            if id(tensor) not in seen:  # a weight, or an activation two ops save, counts once
                seen[id(tensor)] = tensor
                size = tensor.numel() * tensor.element_size()
                saved, largest = saved + size, max(largest, size)
            return tensor

        x = torch.empty(batch, *shape.input_shape)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            out = net(x)
    params = sum(p.numel() for p in net.parameters())
    if slots is None:
        slots = state_slots(cfg.train.optimizer, cfg.train.momentum)
    inputs = (x.numel() + out.numel()) * 4
    evaluation = 2 * largest * tested / batch
    return int(4 * params * (2 + slots) + max(2 * saved + inputs, evaluation))


def build(configs: Sequence[TrialConfig], shape: DataShape, compute: Compute) -> Stack:
    """Each config's network, initialized as its own trial's, as one stack on the device."""
    nets = []
    for cfg in configs:
        torch.manual_seed(cfg.seed)  # for any draw not made from the explicit generator
        generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
        nets.append(models.build(cfg.model, cfg.init, shape, generator).to(compute.device))
    return Single(nets[0], compute) if len(nets) == 1 else Vmapped(nets)
