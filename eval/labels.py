"""Variable labels on answers (``x = 1``, ``x=3, y=-2``), read by ``eval.equivalence``.

Own rules from the outside blind table (``tests/data/grading_blind.jsonl``, issue 10): a label
is dropped against a bare value (``x = 1`` equals ``1``) but two different labels are two
different answers (the line ``x = 1`` is not the line ``y = 1``); coordinates named x, y (, z)
are the point ``(x, y, z)``.
"""

from __future__ import annotations

import re

VARIABLE = re.compile(r"^([a-zA-Z](?:_\{?\w+\}?)?)=(?!=)")


def other_variable(p: str, g: str) -> bool:
    """``x=1`` vs ``y=1``: both name a variable and the names differ (``a_1`` is ``a_{1}``)."""
    mp, mg = VARIABLE.match(p), VARIABLE.match(g)
    return bool(mp and mg) and re.sub(r"[{}]", "", mp.group(1)) != re.sub(r"[{}]", "", mg.group(1))


def as_point(s: str, items: list[str], other: str) -> str:
    """``x=3,y=-2`` (split into ``items``) -> ``(3,-2)`` when ``other`` is a tuple; else ``s``."""
    found = [VARIABLE.match(x) for x in items]
    if not other.startswith("(") or not 2 <= len(found) <= 3 or not all(found):
        return s
    named = {m.group(1): x[m.end() :] for m, x in zip(found, items)}
    names = list("xyz"[: len(items)])
    return "(" + ",".join(named[v] for v in names) + ")" if sorted(named) == names else s
