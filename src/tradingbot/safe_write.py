"""Every file tradingbot writes goes through here: checked, then written atomically.

A write is refused (:class:`WriteError`, naming the path) when

- the target, or a directory between ``root`` and the target, is a symbolic link (a link
  planted in a run directory must not redirect a write to its target);
- the target lies outside ``root`` (a run directory's files stay inside it);
- the target exists and is not a regular file (a directory, a device such as ``/dev/full``);
- the target is one of the ``protect``-ed paths, or an existing file inside a protected
  directory (the input data, a run's model, config and checkpoints).

The write itself is atomic: a temporary file in the target's directory is written, fsynced and
renamed over the target, and the directory is fsynced so that the rename is durable. A crash
leaves either the old file or the new one, never a mix; ``os.replace`` replaces a name, so it
never writes through a link either. Failures of the operating system (no permission, disk
full) are reported as :class:`WriteError` with the path.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tradingbot.errors import UserError


class WriteError(UserError, OSError):
    """A file that may not or could not be written (also an ``OSError``, so that code catching
    the operating system's write errors keeps catching them)."""


def _inside(path: str, directory: str) -> bool:
    """Whether the absolute, normalized ``path`` is ``directory`` or below it."""
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _check_components(target: Path, root: Path) -> None:
    """Refuse a target outside ``root`` or behind a symlinked directory below ``root``."""
    absolute, top = os.path.abspath(target), os.path.abspath(root)
    if absolute == top or not _inside(absolute, top):
        raise WriteError(f"{target}: refusing to write outside the run directory {root}")
    current = Path(top)
    for part in Path(absolute).relative_to(top).parts[:-1]:
        current = current / part
        if current.is_symlink():
            raise WriteError(f"{target}: refusing to write through the symbolic link {current}")
        if current.exists() and not current.is_dir():
            raise WriteError(f"{target}: {current} is not a directory")


def _protected(target: Path, protect: Iterable[Path]) -> Path | None:
    """The protected path that writing ``target`` would overwrite, if any."""
    real = os.path.join(os.path.realpath(target.parent), target.name)
    exists = target.exists()
    for item in protect:
        item_real = os.path.realpath(item)
        if real == item_real or (exists and item.exists() and os.path.samefile(target, item)):
            return item
        if exists and Path(item_real).is_dir() and _inside(real, item_real):
            return item
    return None


def check_target(
    path: str | Path, root: str | Path | None = None, protect: Iterable[str | Path] = ()
) -> Path:
    """Check that ``path`` may be written (see the module docstring); return it as a Path.

    Parameters
    ----------
    path: the file to write.
    root: the directory the file must stay in (a run directory), or None for a path the user
        chose (its parent directories may then be links; the file itself may not).
    protect: files that must not be overwritten, and directories whose existing files must not
        be (new files inside them are allowed).
    """
    target = Path(path)
    if root is not None:
        _check_components(target, Path(root))
    if target.is_symlink():
        raise WriteError(f"{target}: refusing to write through a symbolic link")
    if target.exists():
        mode = target.stat().st_mode
        if stat.S_ISDIR(mode):
            raise WriteError(f"{target}: is a directory; give a file name")
        if not stat.S_ISREG(mode):
            raise WriteError(f"{target}: not a regular file (a device or a pipe); not writing")
    hit = _protected(target, [Path(p) for p in protect])
    if hit is not None:
        raise WriteError(f"{target}: refusing to overwrite {hit} (an input or a run's own file)")
    return target


def make_dirs(directory: str | Path, root: str | Path | None = None) -> Path:
    """Create ``directory`` and its missing parents, none of them a link below ``root``."""
    directory = Path(directory)
    if root is not None:
        _check_components(directory / "_", Path(root))
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise WriteError(f"{directory}: exists and is not a directory") from None
    except OSError as err:
        raise WriteError(f"{directory}: cannot create the directory ({err.strerror})") from None
    return directory


def _fsync_directory(directory: Path) -> None:
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)  # makes the rename itself durable
    finally:
        os.close(handle)


@contextmanager
def atomic_path(
    path: str | Path, root: str | Path | None = None, protect: Iterable[str | Path] = ()
) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed onto ``path``.

    For writers that want a file name (``DataFrame.to_csv``, ``to_parquet``). The checks of
    :func:`check_target` run before anything is created; on an exception the temporary file is
    removed and ``path`` is left as it was.
    """
    target = check_target(path, root, protect)
    make_dirs(target.parent, root)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:
        raise WriteError(f"{target}: cannot write ({err.strerror})") from None
    os.close(fd)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make the file private to the writer
    try:
        yield tmp
        handle = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise WriteError(f"{target}: cannot write ({err.strerror or err})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def write_bytes(
    path: str | Path,
    data: bytes,
    root: str | Path | None = None,
    protect: Iterable[str | Path] = (),
) -> Path:
    """Write ``data`` to ``path`` atomically after the checks of :func:`check_target`."""
    with atomic_path(path, root, protect) as tmp, tmp.open("wb") as handle:
        handle.write(data)
    return Path(path)


def write_text(
    path: str | Path,
    text: str,
    root: str | Path | None = None,
    protect: Iterable[str | Path] = (),
) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically after the checks of :func:`check_target`."""
    return write_bytes(path, text.encode("utf-8"), root, protect)
