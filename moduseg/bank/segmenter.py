"""A bank file with its configuration, and the segmenter built around it.

The configuration a run uses is ``--preset`` > the one stored in the bank >
``default``, then ``--proposer`` and ``--set``; everything is checked before a
model is loaded. The models come from the composition root (``moduseg.build``).
"""

from __future__ import annotations

from dataclasses import dataclass


def load_bank_config(bank_path, preset: str | None = None, overrides=(),
                     proposer: str | None = None):
    """(bank, checked configuration). ``overrides``: ``KEY=VALUE`` strings (``--set``)
    or a mapping ``{"runtime.top_k": 10}`` of values as they are."""
    from ..settings import resolve_config
    from .store import load_bank

    bank = load_bank(bank_path)
    return bank, resolve_config(preset, overrides, bank.config, proposer=proposer)


def segmenter_from_bank(bank_path, home=None, preset: str | None = None, overrides=(),
                        backend="auto", need_proposer: bool = True,
                        proposer: str | None = None):
    """Bank file + configuration -> ``Segmenter`` on ``backend``."""
    from ..build import assemble, resolve_backend

    be = resolve_backend(backend)
    bank, cfg = load_bank_config(bank_path, preset, overrides, proposer)
    return assemble(cfg, bank, be, home, need_proposer=need_proposer)


@dataclass(frozen=True)
class ModelRecipe:
    """What a worker needs to build its models, as plain values (it crosses processes)."""

    backend: str = "auto"
    home: str | None = None
    preset: str | None = None
    overrides: tuple = ()
    bank_path: str | None = None
    proposer: str | None = None


def build_for(recipe: ModelRecipe, what: str):
    """The ``backbone`` (bank building) or the ``segmenter`` of ``recipe``, as
    ``bank build`` and ``segment`` build them in every worker."""
    if what == "backbone":
        from ..build import build_backbone
        from ..settings import resolve_config
        cfg = resolve_config(recipe.preset, recipe.overrides, proposer=recipe.proposer)
        return build_backbone(cfg, recipe.backend, recipe.home)
    if what == "segmenter":
        return segmenter_from_bank(recipe.bank_path, recipe.home, recipe.preset,
                                   recipe.overrides, recipe.backend, proposer=recipe.proposer)
    raise ValueError(f"unknown model set {what!r}")
