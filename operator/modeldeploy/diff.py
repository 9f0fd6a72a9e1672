"""Compare-before-write: is what we want already in the cluster?

The API server adds defaults and normalises quantities, so "desired == observed" is never true.
We ask instead whether every field we set is present with an equal value (`is_subset`). Only
when it is not do we write — an unchanged spec causes zero writes, and a child edited by hand
differs from the desired object, so it is put back.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

_QUANTITY_SUFFIXES: dict[str, Decimal | int] = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}


def parse_quantity(value: Any) -> Decimal | None:
    """Kubernetes resource quantity ('500m', '1Gi', 2) as a Decimal; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str) or not value:
        return None
    for suffix in sorted(_QUANTITY_SUFFIXES, key=len, reverse=True):
        if value.endswith(suffix):
            try:
                return Decimal(value[: -len(suffix)]) * Decimal(_QUANTITY_SUFFIXES[suffix])
            except InvalidOperation:
                return None
    try:
        return Decimal(value)
    except InvalidOperation:
        return None


def _scalar_equal(want: Any, have: Any, path: tuple[str, ...]) -> bool:
    if want == have and type(want) is type(have):
        return True
    if have is None and want in (False, 0, "", [], {}):
        return True  # the API server omits zero values (omitempty)
    if isinstance(want, bool) or isinstance(have, bool):
        return False
    if "resources" in path or "sizeLimit" in path:
        a, b = parse_quantity(want), parse_quantity(have)
        return a is not None and a == b
    return False


def is_subset(want: Any, have: Any, path: tuple[str, ...] = ()) -> bool:
    """True when every field in `want` is present in `have` with an equal value.

    Lists must have the same length; their items are compared pairwise, again as subsets
    (the server adds defaults to list items too, e.g. container ports' protocol).
    """
    if isinstance(want, dict) and want:
        if not isinstance(have, dict):
            return False
        return all(is_subset(v, have.get(k), (*path, k)) for k, v in want.items())
    if isinstance(want, list) and want:
        if not isinstance(have, list) or len(want) != len(have):
            return False
        return all(is_subset(w, h, path) for w, h in zip(want, have, strict=True))
    return _scalar_equal(want, have, path)
