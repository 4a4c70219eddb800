"""The best programs of a run that compute different functions.

Structurally different programs can compute one function (a reordered sum, a renamed
temporary), and a search that has settled holds many such copies at its top. Whatever
shows or promotes "the best N" goes through here, so N slots are N functions.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..programs.program import parse_program
from ..programs.space import Space
from ..store import Store


def distinct_functions(ranked: Iterable[dict], n: int, space: Space,
                       fingerprints: dict[str, str]) -> list[dict]:
    """The first ``n`` of ``ranked`` (best first) that compute different functions:
    individuals with ``program_hash`` and ``text``; ``fingerprints`` caches by hash."""
    seen: set[str] = set()
    out = []
    for member in ranked:
        key = fingerprints.get(member["program_hash"])
        if key is None:
            key = fingerprints[member["program_hash"]] = space.fingerprint(
                parse_program(member["text"]))
        if key not in seen:
            seen.add(key)
            out.append(member)
            if len(out) == n:
                break
    return out


def functionally_distinct(store: Store, run_id: int, space: Space, n: int) -> list[dict]:
    """The ``n`` best programs of the run at its search tier that compute different
    functions, read from the store in growing pages until ``n`` are found."""
    fingerprints: dict[str, str] = {}
    limit = 5 * n
    while True:
        ranked = store.top(run_id, limit)
        rows = distinct_functions(ranked, n, space, fingerprints)
        if len(rows) == n or len(ranked) < limit:
            return rows
        limit *= 4
