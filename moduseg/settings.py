"""Turn CLI ``--preset``, ``--proposer`` and ``--set key=value`` into a ``ModuSegConfig``."""

from __future__ import annotations

import ast
import dataclasses

from .config import PROPOSERS, ModuSegConfig, ProposerOptions, preset as named_preset
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


def resolve_config(preset: str | None, overrides=(), stored: dict | None = None,
                   proposer: str | None = None) -> ModuSegConfig:
    """``--preset`` wins; else the configuration stored with the bank; else ``default``.

    ``proposer`` (``--proposer``) switches the proposer: options stored for the
    other one are dropped; ``--set proposer.*`` then applies to the new one.
    """
    if preset:
        cfg = named_preset(preset)
    elif stored:
        cfg = ModuSegConfig.from_dict(stored)
    else:
        cfg = named_preset("default")
    if proposer is not None and proposer != cfg.proposer.name:
        if proposer not in PROPOSERS:
            raise InputError(f"--proposer must be one of {', '.join(PROPOSERS)}, got {proposer!r}")
        cfg = dataclasses.replace(cfg, proposer=ProposerOptions(name=proposer),
                                  preset=cfg.preset + "+custom")
    sets = parse_overrides(overrides)
    return cfg.with_overrides(**sets) if sets else cfg.validate()
