"""Reading users' files and showing users' text safely.

``open_npz`` opens an NPZ archive only after checking that it is one (not empty, not a single
``.npy`` array, not garbage); ``read_member`` reads one named array only after its header has
been checked against a size cap (a header can claim a shape of 10¹² entries, a member can
inflate a small file to gigabytes) — nothing is allocated for what is refused. ``shown`` makes
any user-supplied text (a file name, an expression, a stored string) safe to print: control
characters become escapes and long text is shortened.
"""

from __future__ import annotations

import math
import os
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

MAX_SHOWN = 60
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
NPY_MAGIC = b"\x93NUMPY"


def writable(path: Path, what: str) -> None:
    """Raise ``ValueError`` unless a file can be written at ``path``: its folder exists and
    takes new files, and ``path`` is absent or a regular file (never a device or a folder).
    Checked by creating and removing a file next to it, before any long work starts."""
    if path.exists() and not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise ValueError(f"cannot write {what} {shown(str(path))}: it is {kind}")
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(
            f"cannot write {what} {shown(str(path))}: {shown(str(folder))} is not a folder"
        )
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".probe")
    except OSError as exc:
        raise ValueError(f"cannot write {what} {shown(str(path))}: {exc.strerror}") from None
    os.close(fd)
    os.unlink(probe)


def printable(text: str) -> str:
    """``text`` as it is when every character prints, else quoted with escapes (``shown``)."""
    return text if text.isprintable() and len(text) <= 200 else shown(text)


def one_line(text: str) -> str:
    """``text`` with every character that does not print (newlines, escapes, undecodable bytes)
    written as its Python escape, so a message stays one clean line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def shown(text: str) -> str:
    """``text`` quoted for a message: no control characters, at most about 60 characters."""
    clean = repr(str(text))
    return clean if len(clean) <= MAX_SHOWN else clean[: MAX_SHOWN - 4] + "...'"


@contextmanager
def open_npz(path: Path, what: str) -> Iterator[Any]:
    """The NPZ archive at ``path``; ``ValueError`` naming ``what`` if it is not one."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ValueError(f"{what} cannot be read: {exc.strerror}") from None
    if not head:
        raise ValueError(f"{what} is empty (0 bytes), not an NPZ archive")
    if head.startswith(NPY_MAGIC):
        raise ValueError(
            f"{what} is a single .npy array, not an NPZ archive of named arrays "
            "(write one with numpy.savez)"
        )
    if not head.startswith(ZIP_MAGIC):
        raise ValueError(f"{what} is not an NPZ archive (a zip file of .npy arrays)")
    with path.open("rb") as f:
        try:
            archive = np.load(f, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{what} is truncated or not an NPZ archive: {exc}") from None
        with archive:
            yield archive


def read_member(archive: Any, name: str, what: str, max_bytes: int) -> np.ndarray:
    """The array ``name`` of an open archive, once its header shows at most ``max_bytes``."""
    try:
        info = archive.zip.getinfo(f"{name}.npy")
    except KeyError:
        raise ValueError(f"{what} has no array {name!r}") from None
    if info.file_size > max_bytes + 65536:
        raise ValueError(
            f"{what}: array {name!r} inflates to {info.file_size:,} bytes, more than the "
            f"{max_bytes:,} it may take"
        )
    try:
        with archive.zip.open(info) as f:
            major, _ = np.lib.format.read_magic(f)
            if major == 1:
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif major == 2:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy format version {major} is not supported")
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{what}: array {name!r} has an unreadable header: {exc}") from None
    if dtype.hasobject:
        raise ValueError(f"{what}: array {name!r} holds Python objects, which are not read")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > max_bytes or nbytes > info.file_size:
        raise ValueError(
            f"{what}: array {name!r} claims shape {shape} ({nbytes:,} bytes), more than "
            f"{'it stores' if nbytes > info.file_size else f'the {max_bytes:,} it may take'}"
        )
    try:
        return np.asarray(archive[name])
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{what}: array {name!r} cannot be read: {exc}") from None


#: the package's notation in ASCII, for terminals that cannot show Unicode
ASCII_NOTATION = {
    "λ": "lambda",
    "Λ": "Lambda",
    "σ": "sigma",
    "∂": "d",
    "ᵀ": "^T",
    "⊙": "(.)",
    "−": "-",
    "⇒": "=>",
    "≤": "<=",
    "≥": ">=",
    "≠": "!=",
    "η": "eta",
    "ℓ": "l",
    "Σ": "sum",
    "θ": "theta",
    "δ": "delta",
    "∇": "grad",
    "↦": "->",
    "←": "<-",
    "→": "->",
    "∈": "in",
    "×": "x",
    "…": "...",
    "·": "*",
    "′": "'",
    "–": "-",
    "—": "-",
    "⁰": "^0",
    "¹": "^1",
    "²": "^2",
    "³": "^3",
    "⁶": "^6",
    "≈": "~",
    "✓": "ok",
    "ε": "eps",
    "π": "pi",
    "𝟙": "1",
}
ASCII_TABLE = str.maketrans(ASCII_NOTATION)


class AsciiStream:
    """A text stream that writes the package's notation in ASCII (λ as lambda, ∂ as d, …), and
    '?' for anything else outside ASCII, to a stream whose encoding is ASCII only."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        plain = text.translate(ASCII_TABLE).encode("ascii", "replace").decode("ascii")
        return int(self.stream.write(plain))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def unicode_safe(stream: Any) -> Any:
    """``stream`` itself if it can encode the notation, else an ``AsciiStream`` around it."""
    try:
        "λ∂σ⊙ᵀ−⇒".encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return AsciiStream(stream)
    return stream
