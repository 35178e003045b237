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
from pathlib import Path, PurePosixPath

from ..errors import OutputError
from ..io import write_json
from ..owned import MARKER, clean_stale_private_dirs, make_private_dir
from ..text import printable

MANIFEST = ".moduseg-run.json"
MANIFEST_FORMAT = "moduseg.run-files"
PRIVATE_PREFIXES = (".run.", ".old.")


def clean_stale_run_dirs(out: Path) -> list[Path]:
    """Remove the private folders of runs whose process is gone: only ``.run.``/``.old.``
    folders with our marker naming that process (``moduseg.owned``)."""
    return clean_stale_private_dirs(out, PRIVATE_PREFIXES)


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


def read_run_manifest(out: Path) -> list[str] | None:
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
