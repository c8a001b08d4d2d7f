"""Where the activation σ sits in a residual unit (science.md §1.4).

Demystifying ResNet's position vocabulary: ``pre`` (before the first weight), ``mid`` (between
weights), ``post_branch`` (after the last weight), any combination joined by ``+``
(``pre+mid``), or ``linear`` (no activation in the branch). Identity Mappings' named placements
(``post``, ``full_preact``, ...) are issue 4.
"""

from __future__ import annotations

from dataclasses import dataclass

from resablate.registry import did_you_mean

POSITIONS = ("pre", "mid", "post_branch")
NAMED_LATER = ("post", "bn_after_add", "relu_before_add", "relu_preact", "full_preact")


@dataclass(frozen=True)
class Placement:
    pre: bool = False
    mid: bool = False
    post_branch: bool = False


def parse_placement(name: str) -> Placement:
    """``'pre+mid'`` -> Placement(pre=True, mid=True); unknown names raise a ValueError."""
    if name == "linear":
        return Placement()
    if name in NAMED_LATER:
        raise ValueError(
            f"the named placement '{name}' is not built yet (issue 4); use positions"
            f" {', '.join(POSITIONS)} joined by '+', or linear"
        )
    parts = name.split("+")
    for part in parts:
        if part not in POSITIONS:
            raise ValueError(
                f"unknown activation placement '{part}'{did_you_mean(part, list(POSITIONS))}"
                f" (choices: {', '.join(POSITIONS)}, combinations such as pre+mid, or linear)"
            )
    if len(set(parts)) != len(parts):
        raise ValueError(f"'{name}' names a position twice")
    return Placement(**{part: True for part in parts})
