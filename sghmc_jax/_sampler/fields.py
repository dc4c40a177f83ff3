"""The kinds of field of the run plan's records (`plan.py`): settings identify the run (recorded
with its checkpoints and draws); compiled fields, alone, make the record the compiled programs
see and are cached by (`program_view`); values are used by value and are neither. A setting
that shapes the programs is marked once, where it is declared, and nothing copies it by hand."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__: list[str] = []


def setting(*, compiled: bool = False, compare: bool = True) -> Any:
    """A field that changes the draws: recorded in the run's identity (and, when `compiled`,
    read by the compiled programs: part of their cache key unless `compare=False`, for a value
    that only a trace-time check reads)."""
    return dataclasses.field(compare=compare, metadata={"setting": True, "compiled": compiled})


def compiled(*, compare: bool = True) -> Any:
    """A field the compiled programs use that is not a setting (a function, compared by
    identity; with `compare=False` carried along but left out of the cache key)."""
    return dataclasses.field(compare=compare, metadata={"compiled": True})


def value() -> Any:
    """An array or object the run uses by value (digested for the identity where it matters)."""
    return dataclasses.field(default=None, compare=False)


def program_view(record: Any) -> Any:
    """The record with only its compiled fields (others None): what the programs may read,
    hashable, and their cache key; it holds no array, so the cache keeps no data alive."""
    if record is None:
        return None
    drop = {f.name: None for f in dataclasses.fields(record) if not f.metadata.get("compiled")}
    return dataclasses.replace(record, **drop)


def cache_key(record: Any) -> Any:
    """The record's program view without the user's functions (the cache keys programs by what
    they compute, `cache.Program`, and by the functions only where that cannot tell them apart):
    its compiled settings, by name."""
    if record is None:
        return None
    fields = dataclasses.fields(record)
    return tuple(
        (f.name, getattr(record, f.name))
        for f in fields
        if f.metadata.get("setting") and f.compare and f.metadata.get("compiled")
    )


def functions(record: Any) -> tuple[Any, ...]:
    """The user's functions among the record's compiled fields (by identity)."""
    fields = dataclasses.fields(record)
    return tuple(
        getattr(record, f.name)
        for f in fields
        if f.compare and f.metadata.get("compiled") and not f.metadata.get("setting")
    )


def settings(record: Any) -> dict[str, Any]:
    """The record's settings by name."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record) if f.metadata.get("setting")}
