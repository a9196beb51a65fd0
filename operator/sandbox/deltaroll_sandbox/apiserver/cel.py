"""CEL for ``x-kubernetes-validations``: cel-python plus the Kubernetes CEL library functions
CRDs commonly use (lists: ``isSorted``, ``sum``, ``min``, ``max``, ``indexOf``,
``lastIndexOf``; strings: ``lowerAscii``, ``upperAscii``, ``trim``, ``split``, ``join``,
``replace``, ``indexOf``, ``substring``), which cel-python does not have.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import celpy
from celpy import celtypes


def _is_sorted(items: Any) -> celtypes.BoolType:
    values = list(items)
    return celtypes.BoolType(all(a <= b for a, b in zip(values, values[1:], strict=False)))


def _index_of(container: Any, item: Any) -> celtypes.IntType:
    if isinstance(container, str):
        return celtypes.IntType(container.find(item))
    values = list(container)
    return celtypes.IntType(values.index(item) if item in values else -1)


def _last_index_of(container: Any, item: Any) -> celtypes.IntType:
    if isinstance(container, str):
        return celtypes.IntType(container.rfind(item))
    values = list(container)
    return celtypes.IntType(len(values) - 1 - values[::-1].index(item) if item in values else -1)


def _substring(text: Any, start: Any, end: Any = None) -> celtypes.StringType:
    return celtypes.StringType(
        text[int(start) : int(end)] if end is not None else text[int(start) :]
    )


FUNCTIONS: dict[str, Any] = {
    "isSorted": _is_sorted,
    "sum": lambda items: (
        sum(list(items)[1:], list(items)[0]) if list(items) else celtypes.IntType(0)
    ),
    "min": lambda items: min(list(items)),
    "max": lambda items: max(list(items)),
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "lowerAscii": lambda text: celtypes.StringType(text.lower()),
    "upperAscii": lambda text: celtypes.StringType(text.upper()),
    "trim": lambda text: celtypes.StringType(text.strip()),
    "split": lambda text, sep: celtypes.ListType([celtypes.StringType(p) for p in text.split(sep)]),
    "join": lambda items, sep="": celtypes.StringType(str(sep).join(str(i) for i in items)),
    "replace": lambda text, old, new: celtypes.StringType(text.replace(old, new)),
    "substring": _substring,
}


@lru_cache(maxsize=512)
def program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule), functions=FUNCTIONS)


def evaluate(rule: str, context: dict[str, Any]) -> bool:
    """``rule`` against JSON values (``self``, ``oldSelf``); raises on a CEL error."""
    return bool(run(rule, converted(context)))


def converted(context: dict[str, Any]) -> dict[str, Any]:
    """JSON values in CEL's types: converted once, a request's many rules share them (a pod
    converted once per rule of an admission policy was a sixth of the API server's time with
    64 agents patching their pods)."""
    return {name: celpy.json_to_cel(item) for name, item in context.items()}


def run(rule: str, activation: dict[str, Any]) -> Any:
    """What ``rule`` evaluates to against values in CEL's types; raises on a CEL error."""
    return program(rule).evaluate(activation)
