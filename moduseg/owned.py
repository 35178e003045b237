"""Temporary files the package owns, and the one atomic write every writer uses.

Whatever a process writes before it is complete goes into a private folder
beside the destination (``<prefix><pid>-<random>/``) that carries a marker
file naming the process. Clean-up removes only such folders whose marker's
process is gone: ownership, not a file-name pattern, decides, so a user's
``.b.json.123-abc`` or ``.pull-mine`` is never touched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import OutputError
from .text import printable

MARKER = ".moduseg-private"          # inside a private folder: {"pid": ...}
TEMP_PREFIX = ".moduseg-tmp."        # the private folders of ``atomic_path``

# errno values that mean "this output cannot be written here" (not a bug)
OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                 errno.EFBIG, errno.ENOTDIR, errno.EISDIR, errno.EEXIST}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:       # exists, owned by someone else
        return True
    return True


def make_private_dir(parent: str | Path, prefix: str) -> Path:
    """A new folder ``parent/<prefix><pid>-<random>``, marked as this process's."""
    d = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))
    try:
        (d / MARKER).write_text(json.dumps({"pid": os.getpid()}))
    except BaseException:
        shutil.rmtree(d, ignore_errors=True)
        raise
    return d


def marker_pid(d: Path) -> int | None:
    """The process a private folder's marker names (None: not a marked folder)."""
    try:
        rec = json.loads((d / MARKER).read_text())
        pid = rec.get("pid") if isinstance(rec, dict) else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None


def clean_stale_private_dirs(parent: str | Path, prefixes: tuple[str, ...]) -> list[Path]:
    """Remove the private folders in ``parent`` whose process is gone: a folder named
    ``<prefix><pid>-...`` for one of ``prefixes`` *and* holding a marker with that pid."""
    removed = []
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return removed
    for d in entries:
        prefix = next((p for p in prefixes if d.name.startswith(p)), None)
        if prefix is None or d.is_symlink() or not d.is_dir():
            continue
        pid = marker_pid(d)
        if pid is None or not d.name[len(prefix):].startswith(f"{pid}-"):
            continue
        if pid == os.getpid() or pid_alive(pid):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


# what to do about a failed write, by its cause; anything else: the generic advice
_OUTPUT_FIXES = {errno.EISDIR: "it is a folder: give a file name",
                 errno.ENOTDIR: "a part of the path is a file: choose another output path",
                 errno.EACCES: "choose an output path you may write to",
                 errno.EPERM: "choose an output path you may write to",
                 errno.EROFS: "the file system is read-only: choose another output path",
                 errno.ENOSPC: "free some space or choose another output path",
                 errno.EDQUOT: "free some space or choose another output path"}


def output_error(path, e: OSError) -> OutputError:
    """One line for a failed write: the path, the system's reason and the fix."""
    why = e.strerror or str(e)
    fix = _OUTPUT_FIXES.get(e.errno, "free some space or choose another output path")
    return OutputError(f"cannot write {printable(path)}: {why}; {fix}")


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None):
    """Yield a temporary path for ``path``; rename it into place on success.

    The temp file is in a private folder beside ``path``, so a crash or an
    exception leaves no half-written file at ``path``, and what a killed
    process left is removed by the next write into the same folder. ``suffix``:
    the ending the writer needs (``np.savez`` adds ``.npz`` to a name without
    it). A full disk or a read-only folder becomes an ``OutputError``.
    """
    path = Path(path)
    name = path.name if suffix is None or path.name.endswith(suffix) else path.name + suffix
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_private_dirs(path.parent, (TEMP_PREFIX,))
        folder = make_private_dir(path.parent, TEMP_PREFIX)
    except OSError as e:
        raise output_error(path, e) from None
    tmp = folder / name
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        if e.errno in OUTPUT_ERRNOS:
            raise output_error(path, e) from None
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
