"""Checkpoint strategy PYTHON: a user function computes each row's checkpoint value.

``checkpoint: {strategy: PYTHON, function: "package.module:function"}``. The function is
called with each source row as a dict (column name -> value) and returns a value that can be
compared with the stored checkpoint (a number, date, timestamp or string; None = no value).
The worker keeps the rows whose value is above the stored checkpoint (minus ``lag``), or
within ``--from``/``--to`` for a backfill, and the run's new checkpoint is the greatest value
it loaded. Such runs are planned as one chunk: values computed per row in Python cannot be
split into key ranges or ordered across parallel chunks.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.errors import ConfigError
from shared.run.values import Value, decode_value, encode_value, rank


def load_function(path: str) -> Callable[[dict[str, Any]], Any]:
    module_name, _, name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - ImportError, or the module failing on import
        raise ConfigError(f"checkpoint.function '{path}': cannot import module "
                          f"'{module_name}': {type(exc).__name__}: {exc}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise ConfigError(f"checkpoint.function '{path}': module '{module_name}' has no "
                          f"function '{name}'")
    return function


@dataclass(frozen=True)
class PythonFilter:
    """Which rows a PYTHON-checkpoint run keeps: ``lower < value`` (``<=`` for a backfill's
    ``--from``) and ``value <= upper``. No lower bound (a first run or ``--full``) keeps every
    row, also rows whose value is None."""

    function_path: str
    lower: Value = None
    lower_inclusive: bool = False
    upper: Value = None

    def keeps(self, value: Value) -> bool:
        if value is None:
            return self.lower is None and self.upper is None
        if self.lower is not None:
            if rank(value) < rank(self.lower) or (rank(value) == rank(self.lower)
                                                  and not self.lower_inclusive):
                return False
        if self.upper is not None and rank(value) > rank(self.upper):
            return False
        return True

    def to_document(self) -> dict[str, Any]:
        return {"function": self.function_path, "lower": encode_value(self.lower),
                "lower_inclusive": self.lower_inclusive, "upper": encode_value(self.upper)}

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> "PythonFilter":
        return cls(doc["function"], decode_value(doc["lower"]), doc["lower_inclusive"],
                   decode_value(doc["upper"]))
