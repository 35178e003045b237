"""Generate the docs' reference pages at build time (mkdocs-gen-files runs this).

- reference/cli.md from the click commands (``moduseg.cli.cli``, lazy group included),
- reference/configuration.md from the configuration schema and the presets,
- changelog.md from CHANGELOG.md at the repository root.

Nothing here is committed as Markdown: the pages are rebuilt on every ``mkdocs build``,
so they cannot go stale. ``tests/test_docs.py`` imports the same functions.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- CLI

def _walk(cmd: click.Command, path: list[str], ctx: click.Context):
    yield path, cmd, ctx
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is None or getattr(sub, "hidden", False):
                continue
            yield from _walk(sub, path + [name], click.Context(sub, info_name=name, parent=ctx))


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _unset(value) -> bool:
    """click >= 8.2 marks a missing default with a sentinel object."""
    return type(value).__name__ == "Sentinel" or value is getattr(click.core, "UNSET", object())


def _option_row(p: click.Parameter, ctx: click.Context) -> str:
    names = ", ".join(f"`{n}`" for n in [*p.opts, *p.secondary_opts])
    if isinstance(p, click.Option) and p.is_flag and not p.secondary_opts:
        kind = "flag"
    else:
        kind = p.type.get_metavar(p, ctx) if hasattr(p.type, "get_metavar") else None
        kind = kind or p.type.name.upper()
        if getattr(p, "multiple", False):
            kind += " (repeatable)"
    default = ""
    d = p.default
    if p.required:
        default = "required"
    elif (isinstance(p, click.Option) and p.show_default is not False and not _unset(d)
          and d not in (None, (), False) and not callable(d)):
        text = str(d)
        home = str(Path.home())
        if home != "/" and text.startswith(home):
            text = "~" + text[len(home):]
        default = f"`{text}`"
    help_ = getattr(p, "help", "") or ""
    return f"| {names} | {_cell(kind)} | {default} | {_cell(help_)} |"


def _commands_markdown(group: click.Command, prog: str, top: int) -> list[str]:
    out = []
    root = click.Context(group, info_name=prog)
    for path, cmd, ctx in _walk(group, [prog], root):
        name = " ".join(path)
        level = "#" * min(len(path) + top, 4)
        out += [f"{level} `{name}`", ""]
        doc = inspect.cleandoc(cmd.help or "")
        if doc:
            out += [doc.replace("\b\n", ""), ""]
        pieces = cmd.collect_usage_pieces(ctx)
        out += ["```text", f"Usage: {name} {' '.join(pieces)}".rstrip(), "```", ""]
        args = [p for p in cmd.params if isinstance(p, click.Argument)]
        if args:
            out += ["Arguments: " + ", ".join(f"`{a.human_readable_name}`" for a in args), ""]
        opts = [p for p in cmd.params if isinstance(p, click.Option) and not p.hidden]
        if opts:
            out += ["| option | value | default | what |", "|---|---|---|---|"]
            out += [_option_row(p, ctx) for p in opts]
            out += ["| `--help` | flag | | Show the help and exit. |", ""]
        if isinstance(cmd, click.Group):
            subs = [s for s in cmd.list_commands(ctx)]
            out += ["Subcommands: " + ", ".join(f"`{s}`" for s in subs), ""]
    return out


def benchmarks_cli():
    """The research studies' click group (``python -m benchmarks``), from the checkout."""
    import sys

    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.__main__ import cli as studies
    finally:
        sys.path.remove(str(ROOT))
    return studies


def cli_markdown() -> str:
    """The command-line reference: every command and subcommand with its options."""
    from moduseg.cli import cli

    out = ["# Command line", "",
           "Generated from the click commands at build time (`tools/docs_reference.py`). "
           "Every command also answers `--help`. Bad input stops with one line naming the "
           "input and the fix, exit code 2.", ""]
    out += _commands_markdown(cli, "moduseg", 1)
    out += ["## Research benchmarks: `python -m benchmarks`", "",
            "From the repository root (not part of the wheel); see "
            "[Benchmarks](benchmarks.md).", ""]
    out += _commands_markdown(benchmarks_cli(), "python -m benchmarks", 2)[1:]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ configuration

def _value(v) -> str:
    return "`None`" if v is None else f"`{v!r}`"


def config_markdown() -> str:
    """The configuration reference: every option once (``moduseg.config.config_schema``),
    its type, default, range or choices and the value each preset gives it."""
    from moduseg import config as C

    presets = {name: C.preset(name) for name in C.preset_names()}
    out = ["# Configuration", "",
           "Generated from the configuration schema (`moduseg.config.config_schema()`) at "
           "build time (`tools/docs_reference.py`). Set any of these with "
           "`--set section.name=value` on `bank build`, `segment`, `eval`, `serve` and "
           "`bench video`, or pick a preset "
           f"with `--preset` ({', '.join(f'`{p}`' for p in presets)}; see "
           "[Presets](../presets.md) and [Configuration](../concepts/configuration.md)). "
           "A bank stores the configuration it was built with, and `segment`/`eval` use "
           "it unless told otherwise. A misspelt or ill-typed setting stops with one line "
           "before any model loads (\"did you mean ...?\"). `None` means the model's own "
           "default.", ""]
    rows = C.config_schema()
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["section"], r["proposer"]), []).append(r)
    for (section, proposer), group in groups.items():
        title = f"`{section}`" + (f" (`proposer.name={proposer}`)" if proposer else "")
        out += [f"## {title}", ""]
        cls = C.proposer_classes()[proposer] if proposer else C.SECTIONS.get(section)
        doc = inspect.cleandoc(cls.__doc__ or "") if cls is not None else ""
        if doc:
            out += [doc, ""]
        for r in group:
            if r["choices"] is not None:
                allowed = "one of " + ", ".join(_value(c) for c in r["choices"])
            else:
                allowed = r["range"] or ""
            vals = []
            for name, cfg in presets.items():
                part = getattr(cfg, section)
                if proposer and part.name != proposer:
                    continue
                v = getattr(part, r["path"].split(".", 1)[1])
                vals.append(f"{name} {_value(list(v) if isinstance(v, tuple) else v)}")
            line = (f"- **`{r['path']}`** ({r['type']}{'; ' + allowed if allowed else ''}; "
                    f"default {_value(r['default'])}). ")
            if vals:
                line += f"Presets: {', '.join(vals)}. "
            what = r["help"]
            line += what if what.endswith(".") else what + "."
            out.append(line)
        out.append("")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------- changelog

def changelog_markdown() -> str:
    path = ROOT / "CHANGELOG.md"
    return path.read_text(encoding="utf-8") if path.exists() else "# Changelog\n"


PAGES = {
    "reference/cli.md": cli_markdown,
    "reference/configuration.md": config_markdown,
    "changelog.md": changelog_markdown,
}


def main() -> None:
    import mkdocs_gen_files

    for page, make in PAGES.items():
        with mkdocs_gen_files.open(page, "w") as fh:
            fh.write(make())


if __name__ in ("__main__", "<run_path>"):
    main()
