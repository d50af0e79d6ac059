"""Spec tables in stages: where each block sits, and depth multipliers (no TensorFlow).

Every family's table is a tuple of stages, each a tuple of `(repeats, row)` entries, as the papers
write them and as timm does (its `blocks.<stage>.<index>` are these stages). `place` lays the
table out block by block; a builder loops over what it returns, and the names of timm's tensors
follow from the same list (`Placed.stage`, `Placed.index`).
"""

from __future__ import annotations

import collections
import math

# One block: its stage and index in the stage (timm's `blocks.<stage>.<index>`), its position
# over the whole network (our layer names' block id), and its row with the stride it takes: only
# a stage's first block strides.
Placed = collections.namedtuple("Placed", "stage index position row")


def scale_repeats(repeats, multiplier: float) -> list[int]:
    """The repeats of a stage's entries under a depth multiplier, as timm scales them
    (`_scale_stage_depth`, 'ceil'): the stage's total rounded up, handed back to the entries from
    the last one on, each `round()`ed (so the first entry, often the strided one, grows last)."""
    total = sum(repeats)
    scaled_total = math.ceil(total * multiplier)
    scaled = []
    for r in reversed(repeats):
        n = max(1, round(r / total * scaled_total))
        scaled.append(n)
        total -= r
        scaled_total -= n
    return scaled[::-1]


def place(stages, depth_multiplier: float = 1.0, fixed_stages=()) -> list[Placed]:
    """Every block of `stages`, in order. Rows are namedtuples with a `stride` field; the stages
    whose index is in `fixed_stages` keep their depth under `depth_multiplier`."""
    placed = []
    for s, stage in enumerate(stages):
        multiplier = 1.0 if s in fixed_stages else depth_multiplier
        index = 0
        for (_, row), count in zip(stage, scale_repeats([n for n, _ in stage], multiplier)):
            for _ in range(count):
                placed.append(Placed(s, index, len(placed), row if index == 0 else row._replace(stride=1)))
                index += 1
    return placed


def timm_names(placed, parts) -> dict[str, str]:
    """{our layer name: timm's module path} of the `placed` blocks, where `parts(block)` maps the
    names of a block's layers to what follows timm's `blocks.<stage>.<index>.`."""
    return {ours: f"blocks.{b.stage}.{b.index}.{theirs}" for b in placed for ours, theirs in parts(b).items()}
