"""What a run of ``moduseg segment`` owns in ``--out``, and nothing else.

A run never removes a file it cannot show it made. Its private folders
(staging ``.run.<pid>-<random>/`` and the ``.old.<pid>-<random>/`` it parks
the previous run's files in while it swaps) carry a marker file naming the
process; only folders with a marker whose process is gone are cleaned up. The
files a run commits are listed in ``.moduseg-run.json`` (the manifest); the next
run replaces or removes exactly those, so a file a user adds under
``labels/`` or ``overlays/``, or a folder of their own called
``.old.projectA``, is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from ..errors import OutputError
from ..io import pid_alive, write_json
from ..text import printable

MANIFEST = ".moduseg-run.json"
MANIFEST_FORMAT = "moduseg.run-files"
MARKER = ".moduseg-private"          # inside a run's private folder: {"pid": ...}
PRIVATE_PREFIXES = (".run.", ".old.")


def make_private_dir(out: Path, prefix: str) -> Path:
    """A private folder in ``out`` (``prefix`` = ``.run.`` or ``.old.``), marked as ours."""
    d = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=out))
    (d / MARKER).write_text(json.dumps({"pid": os.getpid()}))
    return d


def _marker_pid(d: Path) -> int | None:
    try:
        rec = json.loads((d / MARKER).read_text())
        pid = rec.get("pid") if isinstance(rec, dict) else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None


def clean_stale_private_dirs(out: Path) -> list[Path]:
    """Remove the private folders of runs whose process is gone: only folders with a
    ``.run.``/``.old.`` name *and* our marker, whose name carries the marker's pid."""
    removed = []
    try:
        entries = list(out.iterdir())
    except OSError:
        return removed
    for d in entries:
        if not d.name.startswith(PRIVATE_PREFIXES) or d.is_symlink() or not d.is_dir():
            continue
        pid = _marker_pid(d)
        if pid is None or not d.name[5:].startswith(f"{pid}-"):
            continue
        if pid == os.getpid() or pid_alive(pid):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def _safe_rel(rel) -> str | None:
    """A manifest entry as a relative POSIX path inside ``--out``, else None."""
    if not isinstance(rel, str) or not rel or "\0" in rel:
        return None
    raw = rel.split("/")                       # as written: './x' and 'a//b' are refused
    if any(part in ("", ".", "..") for part in raw):
        return None
    p = PurePosixPath(rel)
    if p.parts[0] == MANIFEST or p.parts[0].startswith(PRIVATE_PREFIXES):
        return None
    return str(p)


def read_manifest(out: Path) -> list[str] | None:
    """The files the previous run committed (None: no manifest of a run here)."""
    try:
        rec = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(rec, dict) or rec.get("format") != MANIFEST_FORMAT:
        return None
    files = rec.get("files")
    if not isinstance(files, list):
        return None
    return sorted({r for r in map(_safe_rel, files) if r is not None})


def legacy_run_files(out: Path) -> list[str]:
    """The files a run of a version before the manifest wrote, from its segments.json
    (only names such a run writes; only when that file says it is a run's)."""
    try:
        with open(out / "segments.json", "rb") as f:
            rec = json.load(f)
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return []
    if not isinstance(rec, dict):
        return []
    files = ["segments.json", "palette.json", "index.html", "overlay.mp4"]
    frames = rec.get("frames")
    for fr in frames if isinstance(frames, list) else []:
        name = fr.get("name") if isinstance(fr, dict) else None
        if isinstance(name, str) and "/" not in name:
            files += [f"labels/{name}.png", f"overlays/{name}.jpg", f"previews/{name}.jpg"]
    return sorted({r for r in map(_safe_rel, files) if r is not None})


def _plain_path(out: Path, rel: str) -> bool:
    """``out/rel``'s folders are real folders inside ``out`` (no link out of it)."""
    d = out
    for part in PurePosixPath(rel).parts[:-1]:
        d = d / part
        if os.path.islink(d) or (os.path.lexists(d) and not d.is_dir()):
            return False
    return True


def staged_files(stage: Path) -> list[str]:
    """Every file in the staging folder, as relative POSIX paths (the marker left out)."""
    out = []
    for root, dirs, files in os.walk(stage):
        for f in files:
            rel = Path(root, f).relative_to(stage).as_posix()
            if rel != MARKER:
                out.append(rel)
    return sorted(out)


def commit_files(out: Path, stage: Path, previous: list[str]) -> list[str]:
    """Swap the previous run's files (``previous``, from its manifest) for the staged
    ones. Called under the folder lock. A staged file whose name is taken by a file
    no run recorded is an error before anything moves."""
    new = staged_files(stage)
    previous = [r for r in previous if _plain_path(out, r)]
    prev = set(previous)
    taken = [r for r in new if (os.path.lexists(out / r) and r not in prev)
             or not _plain_path(out, r)]
    if taken:
        more = f" and {len(taken) - 3} more" if len(taken) > 3 else ""
        raise OutputError(f"--out {printable(out)} already holds "
                          f"{', '.join(printable(t) for t in taken[:3])}{more}, which no run of "
                          f"'moduseg segment' wrote; move them away or choose another folder")
    parked = make_private_dir(out, ".old.")
    moved: list[tuple[Path, Path]] = []        # (from, to): undone in reverse on failure
    try:
        for r in previous:
            src = out / r
            if os.path.lexists(src) and (src.is_symlink() or not src.is_dir()):
                dst = parked / r
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
                moved.append((src, dst))
        for r in new:
            dst = out / r
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / r, dst)
            moved.append((stage / r, dst))
        write_json(out / MANIFEST, {"format": MANIFEST_FORMAT, "version": 1, "files": new})
    except OSError as e:
        for src, dst in reversed(moved):
            with contextlib.suppress(OSError):
                os.replace(dst, src)
        shutil.rmtree(parked, ignore_errors=True)
        raise OutputError(f"cannot move the results into {printable(out)}: "
                          f"{e.strerror or e}") from None
    # folders the previous run's files were in, now empty (a user's file keeps its folder)
    for d in sorted({str(PurePosixPath(r).parent) for r in previous} - {"."},
                    key=lambda s: -s.count("/")):
        with contextlib.suppress(OSError):
            (out / d).rmdir()
    shutil.rmtree(parked, ignore_errors=True)
    return new
