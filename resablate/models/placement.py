"""Where the activation σ and the norm N sit in a residual unit (science.md §1.4).

A placement is the unit written out in the order it computes: the branch F of a two-layer unit
as a sequence of W (a weight layer), N (the norm) and σ (the activation), and f, what follows the
sum h(x) + F(x). Identity Mappings' rows (He et al. 2016, Fig. 4, arXiv 1603.05027) read right to
left in science.md's notation and left to right here:

    post             x' = σ(x + N(W2 σ(N(W1 x))))     F = W N σ W N      f = σ
    bn_after_add     x' = σ(N(x + W2 σ(N(W1 x))))     F = W N σ W        f = N σ
    relu_before_add  x' = x + σ(N(W2 σ(N(W1 x))))     F = W N σ W N σ
    relu_preact      x' = x + N(W2 σ(N(W1 σ(x))))     F = σ W N σ W N
    full_preact      x' = x + W2 σ(N(W1 σ(N(x))))     F = N σ W N σ W    (the net ends with N σ)

For n weights the same pattern extends layer by layer: what stands between W1 and W2 stands
between every pair of weights (``Placement.ops``). Demystifying ResNet's positions on the branch
(arXiv 1611.01186): ``pre`` (σ before the first weight), ``mid`` (σ between weights),
``post_branch`` (σ after the last weight), combinations joined by ``+`` (``pre+mid``), or
``linear`` (none); every weight is followed by N there, and nothing follows the sum.
"""

from __future__ import annotations

from dataclasses import dataclass

from resablate.registry import Registry, did_you_mean

POSITIONS = ("pre", "mid", "post_branch")
W, N, ACT = "W", "N", "σ"  # a weight layer, the norm, the activation


@dataclass(frozen=True)
class Placement:
    branch: str = "W N W N"  # F of a two-layer unit, ops in the order they apply
    after_add: str = ""  # f: ops applied to h(x) + F(x)
    stem: str = "conv_norm"  # what follows the stem convolution: conv | conv_norm | conv_norm_act
    final: str = ""  # before pooling: "" | act | norm_act
    # A projecting shortcut reads what the branch's first weight reads, σ(N(x)) or σ(x), as He
    # et al.'s pre-activation nets do (their "common BN, ReLU").
    preact_shortcut: bool = False

    def __post_init__(self) -> None:
        ops = self.branch.split()
        if ops.count(W) != 2 or not set(ops + self.after_add.split()) <= {W, N, ACT}:
            raise ValueError(f"a two-layer branch of W, N and σ, got '{self.branch}'")

    def ops(self, n: int) -> tuple[str, ...]:
        """F of an n-layer unit: the ops before W1, then W, then (between, W) n − 1 times, then
        the ops after the last weight."""
        ops = self.branch.split()
        first, second = (i for i, op in enumerate(ops) if op == W)
        before, between, after = ops[:first], ops[first + 1 : second], ops[second + 1 :]
        return (*before, W, *[op for _ in range(n - 1) for op in (*between, W)], *after)

    @property
    def widens_output(self) -> bool:
        """Whether some σ is not followed by a weight, so that a σ which widens (crelu) would
        change the width of the unit's output."""
        ops = [*self.branch.split(), *self.after_add.split()]
        return any(op == ACT and ops[i + 1 : i + 2] != [W] for i, op in enumerate(ops))


PLACEMENTS: Registry[Placement] = Registry("activation placement")
for _name, _placement in {
    "post": Placement("W N σ W N", after_add="σ", stem="conv_norm_act"),
    "bn_after_add": Placement("W N σ W", after_add="N σ", stem="conv_norm_act"),
    "relu_before_add": Placement("W N σ W N σ", stem="conv_norm_act"),
    "relu_preact": Placement(
        "σ W N σ W N", stem="conv_norm_act", final="act", preact_shortcut=True
    ),
    "full_preact": Placement("N σ W N σ W", stem="conv", final="norm_act", preact_shortcut=True),
}.items():
    PLACEMENTS.add(_name, _placement)


def parse_placement(name: str) -> Placement:
    """``'pre+mid'`` -> Placement('σ W N σ W N'); unknown names raise a ValueError."""
    if name in PLACEMENTS:
        return PLACEMENTS[name]
    parts = [] if name == "linear" else name.split("+")
    for part in parts:
        if part not in POSITIONS:
            choices = [*PLACEMENTS, *POSITIONS, "linear"]
            raise ValueError(
                f"unknown activation placement '{part}'{did_you_mean(part, choices)}"
                f" (choices: {', '.join(PLACEMENTS)}; or positions {', '.join(POSITIONS)},"
                " combinations such as pre+mid, or linear)"
            )
    if len(set(parts)) != len(parts):
        raise ValueError(f"'{name}' names a position twice")
    before = [ACT] if "pre" in parts else []
    between = [N, ACT] if "mid" in parts else [N]
    after = [N, ACT] if "post_branch" in parts else [N]
    branch = " ".join([*before, W, *between, W, *after])
    return Placement(branch, preact_shortcut="pre" in parts)
