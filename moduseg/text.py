"""Text that leaves the process: terminal lines, OpenCV strings, file-name links.

File names on Linux are bytes; Python gives the ones that are not UTF-8 as
strings with lone surrogates (``surrogateescape``), and class names from a bank
can hold them too. OpenCV's string arguments (``imread``, ``getTextSize``,
``VideoCapture``...) crash the process on such a string, and a terminal or a
UTF-8 file refuses it. Everything here is a pure function of its input.
"""

from __future__ import annotations

import os
import unicodedata
from urllib.parse import quote


def is_utf8(s: str) -> bool:
    """True when ``s`` encodes to UTF-8 as it is (no lone surrogates)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def to_bytes(s: str) -> bytes:
    """The bytes a file-system string stands for (lone surrogates from
    ``surrogateescape`` become their bytes again; any other lone surrogate
    becomes a ``\\udXXX`` escape)."""
    try:
        return s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace")


def printable(s) -> str:
    """``s`` safe to print on one line: undecodable bytes as ``\\xff``, control
    characters (newline, escape, NUL, DEL...) as ``\\n``, ``\\x1b``..."""
    text = to_bytes(str(s)).decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or ch == " ":
            out.append(ch)
        elif unicodedata.category(ch) in ("Cc", "Zl", "Zp", "Cf", "Cs", "Co", "Cn") \
                or ch.isspace():
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def printable_message(s) -> str:
    """A multi-line message made safe line by line (its own newlines are kept)."""
    return "\n".join(printable(line) for line in str(s).split("\n"))


def opencv_text(s) -> str:
    """A label OpenCV can draw: its Hershey fonts have ASCII only, so anything
    else (and every lone surrogate, which would crash it) becomes ``?``."""
    return "".join(ch if " " <= ch <= "~" else "?" for ch in str(s))


def url_path(rel: str) -> str:
    """A relative file path as an ``href``: each byte outside the unreserved set
    percent-encoded, so ``#``, ``?``, ``%``, newlines and non-UTF-8 names link to
    the file they name."""
    return quote(to_bytes(os.fspath(rel)), safe="/-._~")
