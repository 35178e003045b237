"""The edge where a configuration is made: ``--preset``, ``--proposer`` and ``--set
key=value`` (or typed keyword overrides) -> one checked ``ModuSegConfig``."""

from __future__ import annotations

import ast
from typing import Any, Iterable, Mapping

from .config import ModuSegConfig, preset as named_preset
from .errors import InputError


def parse_overrides(items) -> dict:
    """``["runtime.top_k=10", ...]`` -> ``{"runtime.top_k": 10}`` (values as Python
    literals, else strings); the configuration checks names and types."""
    out = {}
    for item in items or ():
        if not isinstance(item, str):
            raise InputError(f"--set expects KEY=VALUE strings, got {item!r}")
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set expects KEY=VALUE (e.g. runtime.top_k=10), got {item!r}")
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            value = raw.strip()
        out[key.strip()] = value
    return out


def resolve_config(preset: str | None, overrides: Iterable[str] | Mapping[str, Any] = (),
                   stored: dict | None = None, proposer: str | None = None) -> ModuSegConfig:
    """``--preset`` wins; else the configuration stored with the bank; else ``default``.

    ``overrides``: ``--set`` strings (``"runtime.top_k=10"``) or a mapping of typed
    values (``{"runtime.top_k": 10}``). ``proposer`` (``--proposer``) switches the
    proposer: options stored for the other one are dropped; ``proposer.*`` settings
    then apply to the new one.
    """
    if preset:
        cfg = named_preset(preset)
    elif stored:
        cfg = ModuSegConfig.from_dict(stored)
    else:
        cfg = named_preset("default")
    sets = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
    if proposer is not None:
        sets = {"proposer.name": proposer, **sets}
    return cfg.with_overrides(sets)


def preset_option(help: str):
    """``--preset``: the shipped preset files are the choices."""
    import click

    from .config import preset_names
    return click.option("--preset", default=None, type=click.Choice(preset_names()),
                        help=help)
