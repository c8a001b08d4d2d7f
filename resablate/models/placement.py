"""Where the activation σ and the norm N sit in a residual unit (science.md §1.4).

Two vocabularies. Identity Mappings' named placements (He et al. 2016, Fig. 4), for n layers the
same pattern layer by layer:

    post             x' = σ(h(x) + N W σ(N W x))
    bn_after_add     x' = σ(N(h(x) + W σ(N W x)))
    relu_before_add  x' = h(x) + σ(N W σ(N W x))
    relu_preact      x' = h(x) + N W σ(N W σ(x))
    full_preact      x' = h(x) + W σ(N W σ(N x))      (the network ends with N, σ)

and Demystifying ResNet's positions on the branch: ``pre`` (σ before the first weight), ``mid``
(between weights), ``post_branch`` (after the last weight), combinations joined by ``+``
(``pre+mid``), or ``linear`` (none); each weight is followed by N there.
"""

from __future__ import annotations

from dataclasses import dataclass

from resablate.registry import did_you_mean

POSITIONS = ("pre", "mid", "post_branch")


@dataclass(frozen=True)
class Placement:
    pre: bool = False  # σ on the branch's input (after N_1 when norms come first)
    mid: bool = False  # σ between the branch's weights
    post_branch: bool = False  # σ at the end of the branch
    norm_first: bool = False  # each layer is N σ W (full pre-activation) instead of W N σ
    last_norm: bool = True  # the branch's last weight is followed by N
    norm_after_add: bool = False
    act_after_add: bool = False
    stem: str = "conv_norm"  # what follows the stem convolution: conv | conv_norm | conv_norm_act
    final: str = ""  # before pooling: "" | act | norm_act
    preact_shortcut: bool = False  # a projecting shortcut reads the pre-activated input

    @property
    def widens_output(self) -> bool:
        """Whether σ acts on the unit's output (a widening σ such as crelu cannot)."""
        return self.post_branch or self.act_after_add


NAMED = {
    "post": Placement(mid=True, act_after_add=True, stem="conv_norm_act"),
    "bn_after_add": Placement(
        mid=True, last_norm=False, norm_after_add=True, act_after_add=True, stem="conv_norm_act"
    ),
    "relu_before_add": Placement(mid=True, post_branch=True, stem="conv_norm_act"),
    "relu_preact": Placement(
        pre=True, mid=True, stem="conv_norm_act", final="act", preact_shortcut=True
    ),
    "full_preact": Placement(
        pre=True, mid=True, norm_first=True, stem="conv", final="norm_act", preact_shortcut=True
    ),
}


def parse_placement(name: str) -> Placement:
    """``'pre+mid'`` -> Placement(pre=True, mid=True); unknown names raise a ValueError."""
    if name in NAMED:
        return NAMED[name]
    if name == "linear":
        return Placement()
    parts = name.split("+")
    for part in parts:
        if part not in POSITIONS:
            choices = [*NAMED, *POSITIONS, "linear"]
            raise ValueError(
                f"unknown activation placement '{part}'{did_you_mean(part, choices)}"
                f" (choices: {', '.join(NAMED)}; or positions {', '.join(POSITIONS)},"
                " combinations such as pre+mid, or linear)"
            )
    if len(set(parts)) != len(parts):
        raise ValueError(f"'{name}' names a position twice")
    return Placement(pre="pre" in parts, mid="mid" in parts, post_branch="post_branch" in parts)
