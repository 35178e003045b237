"""The docs' examples: every shell and Python block in README.md and docs/ runs as written
(or, when marked ``<!-- docs-example: check (why) -->``, its ``moduseg`` commands are checked
against the CLI and its Python compiles), and the generated reference pages build.

A runnable example runs in a scratch folder with ``../shared`` beside it, blocks of one page
in order (a later block may use what an earlier one wrote); they skip cleanly without
``../shared/data`` or the default models.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from moduseg.cli import cli

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SHELL = {"bash", "sh", "shell", "console"}
FENCE = re.compile(
    r"(?:^<!--\s*docs-example:\s*(?P<mode>\w+)(?P<why>[^>]*)-->\n)?"
    r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^```\s*$", re.M | re.S)
SHELL_WORDS = {"do", "then", "else", "exec", "!", "{", "("}
PREFIX_COMMANDS = {"nice", "time", "timeout", "env"}
BLOCK_TIMEOUT = 900


@dataclass(frozen=True)
class Example:
    page: str
    line: int
    lang: str
    code: str
    mode: str        # "run" or "check"
    why: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def doc_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def examples(path: Path) -> list[Example]:
    text = path.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        lang = m["lang"].lower()
        if lang not in SHELL and lang != "python":
            continue
        mode = (m["mode"] or "run").lower()
        if mode not in ("run", "check"):
            raise AssertionError(f"{path.name}: unknown docs-example mode {mode!r} "
                                 f"(use 'check (why)' or nothing)")
        out.append(Example(str(path.relative_to(ROOT)), text.count("\n", 0, m.start("code")),
                           "python" if lang == "python" else "shell", m["code"], mode,
                           (m["why"] or "").strip()))
    return out


ALL = [e for p in doc_pages() for e in examples(p)]
PAGES_TO_RUN = sorted({e.page for e in ALL if e.mode == "run"})


# ----------------------------------------------------------- static: the CLI accepts it

def invocations(code: str) -> list[list[str]]:
    """Every simple command in a shell block, as tokens (heredoc bodies too)."""
    code = code.replace("\\\n", " ")
    found = []
    for line in code.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            tokens = list(lexer)
        except ValueError:                       # an unbalanced quote in a heredoc line
            continue
        command: list[str] = []
        for tok in tokens + [";"]:
            if tok and set(tok) <= set(";&|()"):
                if command:
                    found.append(command)
                command = []
            else:
                command.append(tok)
    out = []
    for command in found:
        i = 0
        while i < len(command):
            if command[i] in SHELL_WORDS or command[i] == "$" or re.match(r"^\w+=", command[i]):
                i += 1
            elif Path(command[i]).name in PREFIX_COMMANDS:   # nice -n 10 CMD, /usr/bin/time -v CMD
                i += 1
                while i < len(command) and (command[i].startswith("-")
                                            or re.fullmatch(r"[\d.]+[smh]?", command[i])):
                    i += 1
            else:
                break
        if i < len(command):
            out.append(command[i:])
    return out


def moduseg_commands(code: str) -> list[list[str]]:
    """Every ``moduseg ...`` invocation in a shell block."""
    return [c for c in invocations(code) if Path(c[0]).name == "moduseg"]


def benchmark_commands(code: str) -> list[list[str]]:
    """Every ``python -m benchmarks ...`` invocation, as ``["benchmarks", ...]``."""
    return [c[2:] for c in invocations(code)
            if Path(c[0]).name.startswith("python") and c[1:3] == ["-m", "benchmarks"]]


def check_against_cli(tokens: list[str], group: click.Command = cli) -> None:
    """The subcommands exist and every ``--option`` is one of the command's."""
    cmd: click.Command = group
    ctx = click.Context(group, info_name=tokens[0])
    args = tokens[1:]
    while isinstance(cmd, click.Group) and args and not args[0].startswith("-"):
        if re.fullmatch(r"[A-Z][A-Z_]+", args[0]):        # a placeholder: `moduseg bench SUITE`
            return
        sub = cmd.get_command(ctx, args[0])
        assert sub is not None, f"`{' '.join(tokens)}`: no command {args[0]!r} in {ctx.info_name}"
        ctx = click.Context(sub, info_name=args[0], parent=ctx)
        cmd, args = sub, args[1:]
    known = {"--help"}
    for p in cmd.params:
        known.update(o for o in [*p.opts, *p.secondary_opts] if o.startswith("--"))
    for a in args:
        if a.startswith("--"):
            name = a.split("=", 1)[0]
            assert name in known, (f"`{' '.join(tokens)}`: {ctx.command_path} has no option "
                                   f"{name} (it has {', '.join(sorted(known))})")


def _benchmarks_cli():
    return _reference().benchmarks_cli()


@pytest.mark.parametrize("ex", ALL, ids=lambda e: e.id)
def test_example_matches_the_cli(ex: Example):
    if ex.lang == "python":
        compile(ex.code, ex.id, "exec")
        return
    for tokens in moduseg_commands(ex.code):
        check_against_cli(tokens)
    for tokens in benchmark_commands(ex.code):
        check_against_cli(tokens, _benchmarks_cli())
    scripts = re.findall(r"python3? (benchmarks/\S+\.py)", ex.code)
    assert not scripts, f"{ex.id}: run the studies as 'python -m benchmarks STUDY', not {scripts}"


def inline_commands(path: Path) -> list[tuple[str, list[str]]]:
    """``moduseg ...`` and ``python -m benchmarks ...`` written as inline code in prose."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    out = []
    for span in re.findall(r"`([^`]+)`", text):
        span = " ".join(span.split())
        if re.match(r"^(moduseg|python -m benchmarks) [a-z]", span) and "..." not in span:
            for command in (moduseg_commands(span) + benchmark_commands(span)):
                out.append((span, command))
    return out


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_inline_commands_match_the_cli(page):
    for span, tokens in inline_commands(page):
        group = cli if Path(tokens[0]).name == "moduseg" else _benchmarks_cli()
        try:
            check_against_cli(tokens, group)
        except AssertionError as e:
            raise AssertionError(f"{page.name}: `{span}`: {e}") from None


def test_examples_are_found():
    pages = {e.page for e in ALL}
    assert "README.md" in pages and "docs/guides/segment.md" in pages
    assert any(e.lang == "python" and "load_segmenter" in e.code for e in ALL
               if e.page == "README.md")
    assert sum(e.mode == "run" for e in ALL) >= 10
    checks = [e for e in ALL if e.mode == "check"]
    assert all(e.why for e in checks), [e.id for e in checks if not e.why]


def test_command_parser_finds_every_invocation():
    code = ("for i in 0 1; do\n  moduseg bank build --dataset camvid \\\n    --out a-$i.npz\ndone\n"
            "X=1 moduseg segment a.mp4 --out o && ~/v/bin/moduseg models pull  # moduseg nope\n"
            "moduseg export backbone onnx:$(moduseg models path)/x.onnx -o y.onnx\n"
            "echo moduseg\n")
    got = [" ".join(c[:3]) for c in moduseg_commands(code)]
    assert got == ["moduseg bank build", "moduseg segment a.mp4", "~/v/bin/moduseg models pull",
                   "moduseg export backbone", "moduseg models path"]
    with pytest.raises(AssertionError, match="no option --nope"):
        check_against_cli(["moduseg", "segment", "x.mp4", "--nope", "1"])
    with pytest.raises(AssertionError, match="no command 'bild'"):
        check_against_cli(["moduseg", "bank", "bild"])
    bench = benchmark_commands("nice -n 10 python -m benchmarks cross-sequence --preset fast\n")
    assert bench == [["benchmarks", "cross-sequence", "--preset", "fast"]]
    assert benchmark_commands("python -m benchmarks ablation --row paper") == [
        ["benchmarks", "ablation", "--row", "paper"]]
    with pytest.raises(AssertionError, match="no option --frame "):
        check_against_cli(["benchmarks", "scale-out", "--frame", "3"], _benchmarks_cli())


# ------------------------------------------------------------- the generated references

@functools.lru_cache(maxsize=1)
def _reference():
    spec = importlib.util.spec_from_file_location("docs_reference",
                                                  ROOT / "tools" / "docs_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_reference_lists_every_command_and_option():
    text = _reference().cli_markdown()
    ctx = click.Context(cli, info_name="moduseg")
    for name in cli.list_commands(ctx):
        assert f"`moduseg {name}`" in text
    seg = cli.get_command(ctx, "segment")
    for p in seg.params:
        for o in p.opts:
            if o.startswith("--"):
                assert f"`{o}`" in text
    assert "Sentinel" not in text


def test_configuration_reference_lists_every_setting():
    from moduseg import config as C

    text = _reference().config_markdown()
    import dataclasses
    for section, cls in C.SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f"`{section}.{f.name}`" in text
    for row in C.config_schema():               # every proposer's options too
        assert f"`{row['path']}`" in text and row["help"] in text


def test_generated_pages_are_not_committed():
    for page in _reference().PAGES:
        assert not (ROOT / "docs" / page).exists(), (
            f"docs/{page} is generated at build time by tools/docs_reference.py; delete it")


# ------------------------------------------------------------------- running examples

def _models_missing() -> str | None:
    try:
        from moduseg.models.first_use import missing_models
        missing = missing_models()
    except Exception as e:                      # noqa: BLE001 - any failure means "skip"
        return str(e)
    return ", ".join(missing) if missing else None


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.models
@pytest.mark.parametrize("page", PAGES_TO_RUN)
def test_examples_run_as_written(page, tmp_path):
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA}")
    missing = _models_missing()
    if missing:
        pytest.skip(f"default models not installed ({missing}); run 'moduseg models pull'")
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").symlink_to(DATA.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    for ex in [e for e in ALL if e.page == page and e.mode == "run"]:
        argv = (["bash", "-eo", "pipefail", "-c", ex.code] if ex.lang == "shell"
                else [sys.executable, "-c", ex.code])
        r = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True,
                           timeout=BLOCK_TIMEOUT, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, (f"{ex.id} failed (exit {r.returncode}):\n{ex.code}\n"
                                   f"--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}")


def test_home_page_python_is_the_readme_python():
    """README's example is run by tests/test_first_run.py; the site's home page shows the same."""
    def first_python(page):
        return next(e.code for e in ALL if e.page == page and e.lang == "python")
    assert first_python("docs/index.md") == first_python("README.md")


@pytest.mark.slow
def test_site_builds_with_warnings_as_errors(tmp_path):
    """``mkdocs build --strict`` (as .ci/run does): no broken link or anchor, every page in
    the nav, the generated references build. Skips without the ``docs`` extra."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocs_gen_files")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", DISABLE_MKDOCS_2_WARNING="true")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                        str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600, stdin=subprocess.DEVNULL)
    warnings = [l for l in (r.stdout + r.stderr).splitlines() if "WARNING" in l or "ERROR" in l]
    assert r.returncode == 0, "\n".join(warnings) or r.stderr[-3000:]


def test_every_benchmark_study_loads():
    """``python -m benchmarks STUDY --help`` imports each study: none may be broken by a
    module it uses moving (the studies are not part of the wheel, so nothing else imports
    them)."""
    from benchmarks.__main__ import STUDIES

    studies = _benchmarks_cli()
    ctx = click.Context(studies, info_name="benchmarks")
    for name in STUDIES:
        assert isinstance(studies.get_command(ctx, name), click.Command), name
