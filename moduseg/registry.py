"""Named plug-ins: a ``Registry`` maps a name to an entry, lists the names and
answers an unknown name with "did you mean".

Low in the import graph (it imports only ``errors``), so the CLIs, the config
validation and the docs can read the names without loading any model code.
An entry that points at code names it as ``"module:attribute"`` and loads it
on first use (``Entry.load``), so registering costs no import.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Generic, Iterator, TypeVar

from .errors import InputError

T = TypeVar("T")


class UnknownNameError(InputError):
    """A name that no entry of a registry has."""


@dataclass(frozen=True)
class Entry:
    """One registered plug-in: its name, where its code is, a one-line summary.

    ``target`` is ``"module:attribute"`` (loaded lazily by ``load``) or the
    object itself; ``extra`` holds what a registry's users need besides
    (e.g. a proposer's ``options`` class).
    """

    name: str
    target: Any
    summary: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    def load(self):
        if not isinstance(self.target, str):
            return self.target
        module, _, attr = self.target.partition(":")
        obj = importlib.import_module(module)
        for part in attr.split(".") if attr else ():
            obj = getattr(obj, part)
        return obj

    def __getattr__(self, name):
        extra = self.__dict__.get("extra") or {}
        if name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__} {self.__dict__.get('name')!r} has no "
                             f"attribute {name!r}")


class Registry(Generic[T]):
    """``name -> entry`` in registration order; ``kind`` names it in messages."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, *, replace: bool = False) -> T:
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} {name!r} is registered already")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    @contextlib.contextmanager
    def registered(self, name: str, entry: T) -> Iterator[T]:
        """``entry`` under ``name`` for the ``with`` block only (tests, experiments)."""
        old = self._entries.get(name)
        self._entries[name] = entry
        try:
            yield entry
        finally:
            if old is None:
                self._entries.pop(name, None)
            else:
                self._entries[name] = old

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[T]:
        return list(self._entries.values())

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name, default=None):
        return self._entries.get(name, default)

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(self.unknown(name)) from None

    def unknown(self, name, what: str | None = None) -> str:
        """The one-line answer to an unknown ``name``: the choices and the closest one."""
        return (f"unknown {what or self.kind} {name!r}; choose one of "
                f"{', '.join(self._entries)}{did_you_mean(name, self._entries)}")


def did_you_mean(word, choices, prefix: str = "") -> str:
    """`` (did you mean X?)`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""
