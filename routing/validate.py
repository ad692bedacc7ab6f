"""Cross-entry checks of one objective's bucket layout.

Structural checks (types, unknown fields, references) happen while a document
is read (:func:`routing.parse.parse_rules`); this module holds the checks that
need the whole objective at once: whether its experiments and canary claim
the same users.

The layout they enforce: every objective has one allocation bucket space
(salt ``objective.salt``). Experiment ``e`` owns the buckets
``[offset_percent*100, (offset_percent+allocation_percent)*100)``, growing
upward as it ramps; the canary owns the top ``percent*100`` buckets, growing
downward. Two ranges that intersect put the same users in two places, so they
are rejected, except between experiments that cannot both match one request
(their ``match`` sets are disjoint on some field) or that say they are
``compatible_with`` each other, in which case declaration order decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from routing.allocation import BUCKETS

if TYPE_CHECKING:
    from routing.rules import Canary, Experiment

__all__ = ["check_layout", "matches_disjoint"]


def matches_disjoint(a: Experiment, b: Experiment) -> bool:
    """Tell whether no request can match both experiments.

    True when some field is constrained by both ``match`` objects with no
    value in common.
    """
    for key, values in a.match.items():
        other = b.match.get(key)
        if other is not None and not set(values) & set(other):
            return True
    return False


def _fmt(start: int, end: int) -> str:
    return f"[{start / 100:g}%, {end / 100:g}%)"


def check_layout(path: str, experiments: Sequence[Experiment], canary: Canary | None) -> list[str]:
    """Return the problems of one objective's bucket layout (empty when sound).

    ``path`` is the objective's path, e.g. ``objectives.title-ranking``.
    """
    problems: list[str] = []
    for i, exp in enumerate(experiments):
        if exp.end > BUCKETS:
            problems.append(
                f"{path}.experiments[{i}].allocation_percent: offset_percent "
                f"{exp.offset_percent:g} + allocation_percent {exp.allocation_percent:g} exceeds 100"
            )
        for known in exp.compatible_with:
            if known == exp.id or all(e.id != known for e in experiments):
                problems.append(
                    f"{path}.experiments[{i}].compatible_with: no other experiment '{known}' on this objective"
                )
    for j, later in enumerate(experiments):
        for earlier in experiments[:j]:
            start, end = max(earlier.start, later.start), min(earlier.end, later.end)
            if start >= end:
                continue
            if matches_disjoint(earlier, later):
                continue
            if earlier.id in later.compatible_with or later.id in earlier.compatible_with:
                continue
            problems.append(
                f"{path}.experiments[{j}]: buckets {_fmt(start, end)} overlap experiment "
                f"'{earlier.id}'; move it with offset_percent, make the match sets disjoint, "
                f"or declare compatible_with"
            )
    if canary is not None and canary.start < BUCKETS:
        for exp in experiments:
            if exp.end > canary.start and exp.start < exp.end:
                problems.append(
                    f"{path}.canary.percent: canary {canary.percent:g}% (top buckets "
                    f"{_fmt(canary.start, BUCKETS)}) + experiment '{exp.id}' "
                    f"(buckets {_fmt(exp.start, exp.end)}) claim the same users: "
                    f"together they pass 100%"
                )
    return problems
