"""Range checks of config fields, written once for every frozen config dataclass.

``check_fields(self, ("lr", "decay_rate"), "> 0")`` in a ``__post_init__`` raises
``ValueError("lr must be > 0, got -1")`` for the first field that breaks the rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

# rule -> the test a value FAILS (written as the checks were: NaN fails "> 0" and "in (0, 1)").
_FAILS: dict[str, Callable[[float], bool]] = {
    "> 0": lambda value: not value > 0,
    ">= 0": lambda value: value < 0,
    ">= 1": lambda value: value < 1,
    "in (0, 1)": lambda value: not 0.0 < value < 1.0,
}


def check_fields(config: object, names: Iterable[str], rule: str) -> None:
    """Raise ``ValueError`` naming the first of ``names`` whose value on ``config`` breaks
    ``rule`` (one of "> 0", ">= 0", ">= 1", "in (0, 1)")."""
    fails = _FAILS[rule]
    for name in names:
        value = getattr(config, name)
        if fails(value):
            raise ValueError(f"{name} must be {rule}, got {value}")
