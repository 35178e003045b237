"""The ``moduseg`` command line.

Subcommands live next to the code they drive and are imported only when
invoked, so ``moduseg --help`` stays fast and a missing optional package
(torch, tensorrt) only affects the command that needs it.
"""

from __future__ import annotations

import importlib
import sys

import click

from .cli_options import one_line_errors

# command name -> "module:attribute" of a click command or group
COMMANDS = {
    "bank": "moduseg.bank.cli:bank",
    "segment": "moduseg.app.cli:segment",
    "eval": "moduseg.evaluate:eval_command",
    "models": "moduseg.models.cli:models",
    "export": "moduseg.export.cli:export",
    "bench": "moduseg.bench:bench_command",
    "pseudo": "moduseg.bank.pseudo.cli:pseudo",
    "cuda": "moduseg.runtime.cuda.cli:cuda",
    "serve": "moduseg.serve.cli:serve",
}


class LazyGroup(click.Group):
    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            module, _, attr = self.lazy[name].partition(":")
            try:
                return getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as e:
                raise click.ClickException(
                    f"the '{name}' command is unavailable: {e}") from None
        return super().get_command(ctx, name)


class FriendlyErrors(LazyGroup):
    """Turn ``ModuSegError`` into a one-line message and exit code 2."""

    def invoke(self, ctx):
        with one_line_errors(ctx):
            return super().invoke(ctx)


@click.group(cls=FriendlyErrors, lazy=COMMANDS)
@click.version_option(package_name="moduseg")
def cli():
    """ModuSeg: training-free weakly supervised semantic segmentation."""


def main(argv=None):
    return cli.main(args=argv, prog_name="moduseg")


if __name__ == "__main__":
    sys.exit(main())
