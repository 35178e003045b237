"""Command-line options read from the registries: ``--backend`` and ``--proposer``
list what is registered (``registry.BACKENDS`` / ``PROPOSERS``) when they are
used, so a proposer registered by a plug-in is accepted everywhere."""

from __future__ import annotations

import contextlib
import functools

import click

from .registry import BACKENDS, PROPOSERS, Registry, choices_help, did_you_mean


class RegistryChoice(click.ParamType):
    """A name registered in ``registry`` (checked when parsed, not when defined)."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self.name = registry.kind

    def get_metavar(self, param, ctx=None):
        return "[" + "|".join(self.registry.names()) + "]"

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem
        return [CompletionItem(n) for n in self.registry.names() if n.startswith(incomplete)]

    def convert(self, value, param, ctx):
        if value in self.registry:
            return value
        self.fail(f"{value!r} is not a registered {self.registry.kind}; choose one of "
                  f"{', '.join(self.registry.names())}{did_you_mean(value, self.registry)}",
                  param, ctx)


def backend_option(default: str = "auto", extra: str = ""):
    """``--backend NAME`` with the registered backends in its help, and ``--device``
    beside it (the spelling users bring from other tools: cpu, cuda, gpu, cuda:0).

    The command receives one ``backend`` argument: ``--device`` mapped to its backend
    (``moduseg.device``), ``--backend``, or ``default``; both given must agree.
    """
    def decorate(command):
        @functools.wraps(command)
        def resolved(*args, backend=None, device=None, **kwargs):
            from .device import resolve_backend_option
            return command(*args, backend=resolve_backend_option(backend, device, default),
                           **kwargs)
        resolved = click.option(
            "--device", default=None, metavar="DEVICE",
            help="Where to run, as other tools spell it: cpu, cuda (gpu, cuda:0) or auto; "
                 "the same as --backend cpu / cuda / auto.")(resolved)
        return click.option("--backend", default=None, metavar="NAME",
                            help=f"Backend: {choices_help(BACKENDS)}. Default: "
                                 f"{default}.{extra}")(resolved)
    return decorate


def proposer_option(help_prefix: str = "Proposer", default_note: str = " Default: the bank's."):
    """``--proposer NAME``, one of the registered proposers."""
    return click.option("--proposer", default=None, type=RegistryChoice(PROPOSERS),
                        help=f"{help_prefix}: {choices_help(PROPOSERS)}.{default_note}")


@contextlib.contextmanager
def one_line_errors(ctx: click.Context):
    """A ``ModuSegError`` raised inside becomes one line on stderr and exit code 2 (bad
    input names itself and its fix; no traceback): the ``moduseg`` and ``python -m
    benchmarks`` entry points both run their commands in it."""
    from .errors import ModuSegError
    from .text import printable_message

    try:
        yield
    except ModuSegError as e:
        click.echo(f"Error: {printable_message(e)}", err=True)
        ctx.exit(2)
