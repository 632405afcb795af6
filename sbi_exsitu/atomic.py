"""Atomic file writes, the one output-path guard, and output locks.

Writes go to a temporary file next to the target, then rename: a rename within
one directory is atomic on POSIX, so readers see either the old file or the
complete new one, never a half-written file -- also when a long job is killed
mid-write.

:func:`check_output_path` is called by every command BEFORE its work, so a bad
``-o`` (an input, a folder, a read-only place, a path under a file) fails in
a second with a message that says how to fix it, not after hours of sampling.
:class:`OutputLock` lets one process at a time write an output.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
    >>> atomic_write_text(p, '{"ok": true}')
    >>> p.read_text()
    '{"ok": true}'
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from sbi_exsitu.errors import OutputBusyError, OutputPathError

__all__ = [
    "OutputPathError",
    "OutputBusyError",
    "OutputLock",
    "check_output_path",
    "atomic_path",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save",
]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet): compare the resolved paths
        return a.resolve() == b.resolve()


def _writable_folder(folder: Path, target: Path) -> None:
    """Raise unless a file can be created in ``folder`` (which exists)."""
    if not folder.is_dir():
        raise OutputPathError(
            f"{target}: {folder} is a file, not a folder; choose another -o"
        )
    # os.access is cheap but says yes to root on a read-only mount: probe too.
    try:
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "not writable")
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputPathError(
            f"{target}: the folder {folder} is read-only ({err.strerror}); "
            "choose another -o"
        ) from None


def check_output_path(
    path: str | Path,
    *,
    inputs: Iterable[str | Path | None] = (),
    overwrite: bool = False,
    kind: Literal["file", "dir"] = "file",
) -> Path:
    """Check that ``path`` can be written, before any work is done.

    Args:
        path: the output file (``kind="file"``) or folder (``kind="dir"``).
        inputs: files the command reads (``None`` entries are skipped); the
            output must be none of them, also through symlinks.
        overwrite: an existing output file may be replaced (``--overwrite``);
            an existing output folder is always fine.
        kind: ``"file"`` or ``"dir"``.

    Returns:
        ``path`` as a :class:`~pathlib.Path` (the folders are not created).

    Raises:
        OutputPathError: the output is an input, an existing folder (for a
            file) or file (for a folder), exists without ``overwrite``, lies
            under a file, or its folder is read-only.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> check_output_path(d / "out.csv", inputs=[d / "in.h5"]).name
        'out.csv'
        >>> check_output_path(d, kind="file")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sbi_exsitu.errors.OutputPathError: ...is a folder, not a file; choose another -o
    """
    path = Path(path).expanduser()
    for source in inputs:
        if source is not None and _same_file(path, Path(source).expanduser()):
            raise OutputPathError(
                f"{path}: the output is also an input ({source}); writing it "
                "would destroy the input; choose another -o"
            )
    if kind == "file" and path.is_dir():
        raise OutputPathError(f"{path} is a folder, not a file; choose another -o")
    if kind == "dir" and path.exists() and not path.is_dir():
        raise OutputPathError(f"{path} is a file, not a folder; choose another -o")
    if kind == "file" and path.exists() and not overwrite:
        raise OutputPathError(
            f"{path} exists; pass --overwrite to replace it or choose another -o"
        )
    folder = path if kind == "dir" else path.parent
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and not folder.is_symlink():
        folder = folder.parent  # the first existing ancestor is created under
    _writable_folder(folder, path)
    return path


class OutputLock:
    """An exclusive, non-blocking lock on ``<output>.lock`` held while writing.

    ``fcntl.flock`` dies with its process, so a killed job never leaves a lock
    that blocks the re-run; the lock file is removed on release (after the
    acquire re-checks the inode, so a file unlinked meanwhile is never trusted).

    Raises:
        OutputBusyError: another process holds the lock (the message gives its
            pid).

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "d.h5"
        >>> with OutputLock(out):
        ...     OutputLock(out).acquire()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sbi_exsitu.errors.OutputBusyError: another process (pid ...) is writing ...
    """

    def __init__(self, output: str | Path) -> None:
        self.output = Path(output)
        self.path = self.output.with_name(self.output.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        import fcntl  # POSIX only; imported here so the module imports anywhere

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise OutputBusyError(
                    f"another process (pid {holder}) is writing {self.output}; "
                    "wait for it or choose another -o"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed it as we opened it: take a new one
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still holding: see the class doc
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on success it is renamed to ``path``.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON atomically (NaN is written as null)."""
    atomic_write_text(path, json.dumps(_nan_to_none(data), indent=2, sort_keys=False))


def atomic_save(path: str | Path, writer: Callable[[Path], Any]) -> None:
    """Call ``writer(tmp_path)`` (e.g. ``fig.savefig``, ``torch.save``) atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj
