"""A neutral column type model, so a target on one database can be created from a source on
another: each adapter reads source types into ``ColumnType`` and writes DDL from it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class TypeKind(str, Enum):
    SMALLINT = "smallint"
    INTEGER = "integer"
    BIGINT = "bigint"
    NUMERIC = "numeric"
    FLOAT = "float"
    TEXT = "text"
    BOOLEAN = "boolean"
    DATE = "date"
    TIME = "time"
    TIMESTAMP = "timestamp"
    TIMESTAMPTZ = "timestamptz"
    BYTES = "bytes"
    JSON = "json"
    UUID = "uuid"


@dataclass(frozen=True)
class ColumnType:
    kind: TypeKind
    precision: int | None = None
    scale: int | None = None
    length: int | None = None


@dataclass(frozen=True)
class SourceColumn:
    name: str
    type: ColumnType
