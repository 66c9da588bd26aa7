"""Atomic writes: a file, or a whole output folder, appears complete or not at all.

* :func:`atomic_write` writes a temporary file beside the target, then renames it into place: a
  crash or a full disk never leaves a half-written report or model where a finished one stood.
  The file is created with the permissions of the process's umask (``0o666 & ~umask``), like any
  file a tool writes, not ``mkstemp``'s private ``0o600``.
* :class:`StagedDir` writes a whole run (weights, model card, report) into a temporary folder
  beside ``--out`` and swaps it in as one unit when the run succeeds: on Linux with
  ``renameat2(RENAME_EXCHANGE)`` (one atomic step, the previous folder is never missing), elsewhere
  with two renames. A run that fails, is interrupted (Ctrl-C) or killed leaves the previous folder
  as it was; the staging folder of a killed run is removed by the next run into the same place.
* :func:`check_out_dir` validates an output folder *before* the work starts (an existing file, a
  read-only place, a non-empty folder that holds no workbench report), so a bad ``--out`` costs
  nothing.

Files of the previous run that the new run does not write (e.g. the model beside which a later
``workbench saliency`` report is written) are carried over (hard links), so writing a report into
a model's folder keeps the model; files the new run writes replace the old ones together.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from .errors import BadInput

_TMP_SUFFIX = ".tmp"
_STAGE = ".stage-"
_OLD = ".old-"
REPORT_MARKER = "report.json"  # every workbench run folder holds one


# ------------------------------------------------------------------ single files
def _create_temp(directory: Path, name: str, *, is_dir: bool = False, kind: str = "") -> Path:
    """A new hidden file or folder ``.NAME{kind}PID-RANDOM`` in ``directory`` (umask permissions)."""
    for _ in range(100):
        tmp = directory / f".{name}{kind or '.'}{os.getpid()}-{secrets.token_hex(4)}{'' if is_dir else _TMP_SUFFIX}"
        try:
            if is_dir:
                tmp.mkdir(mode=0o777)
            else:
                os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary name in {directory}")


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` to produce the file, then move it onto ``path`` atomically.

    The temporary file lies beside ``path`` (same file system, so ``os.replace`` is atomic) and is
    removed if ``writer`` fails; the parent folder is created if missing.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write.
    writer : callable
        ``writer(tmp_path)`` writes the whole file at ``tmp_path`` (a ``Path``).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    Exception
        Whatever ``writer`` raises (the target is then untouched).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_temp(path.parent, path.name)
    try:
        writer(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`).

    Parameters
    ----------
    path : str or os.PathLike
        The file to write.
    data : bytes
        Its whole content.

    Returns
    -------
    Path
        ``path``.
    """
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` as UTF-8, atomically (see :func:`atomic_write`).

    Parameters
    ----------
    path : str or os.PathLike
        The file to write.
    text : str
        Its whole content.

    Returns
    -------
    Path
        ``path``.
    """
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


# ------------------------------------------------------------------ leftovers of killed runs
def _pid_of(name: str, marker: str) -> int | None:
    """The process id in a temporary name ``.X{marker}PID-RANDOM[.tmp]``, or None."""
    _, sep, rest = name.rpartition(marker)
    if not sep:
        return None
    pid = rest.split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def clean_leftovers(target: str | os.PathLike) -> list[Path]:
    """Remove what killed runs left around ``target``: staging and swap folders beside it and
    temporary files inside it, each only when the process that made it no longer runs. If a run
    was killed half-way through a two-rename swap (systems without ``RENAME_EXCHANGE``), the
    previous folder is put back first. Returns what was removed.

    Parameters
    ----------
    target : str or os.PathLike
        An output folder (existing or not).

    Returns
    -------
    list of Path
        The staging folders, swap folders and temporary files removed (empty when none).
    """
    target = Path(target)
    parent = target.parent
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    prefix = f".{target.name}"
    stale = []
    for p in parent.iterdir():
        if p.name.startswith(prefix):
            for marker in (_STAGE, _OLD):
                if p.name.startswith(prefix + marker):
                    pid = _pid_of(p.name, marker)
                    if pid is not None and not _alive(pid):
                        stale.append((marker, p))
    olds = [p for m, p in stale if m == _OLD]
    if not target.exists() and len(olds) == 1:
        os.rename(olds[0], target)  # the swap was cut between its two renames: restore the old run
        stale = [(m, p) for m, p in stale if p != olds[0]]
    for _, p in stale:
        _remove(p)
        removed.append(p)
    if target.is_dir() and not target.is_symlink():
        for p in target.iterdir():
            if p.name.startswith(".") and p.name.endswith(_TMP_SUFFIX):
                pid = _pid_of(p.name[: -len(_TMP_SUFFIX)], ".")
                if pid is not None and not _alive(pid):
                    _remove(p)
                    removed.append(p)
    return removed


# ------------------------------------------------------------------ output folders
def check_out_dir(out: str | os.PathLike, what: str = "--out") -> Path:
    """Validate an output folder before any work: BadInput for an existing file, a place the user
    cannot write, or an existing non-empty folder that is not a workbench run folder (no
    ``report.json``, or subfolders in it), which a run would otherwise replace. Creates nothing.

    Parameters
    ----------
    out : str or os.PathLike
        The output folder (a symbolic link is resolved).
    what : str, default "--out"
        The option's name, for the messages.

    Returns
    -------
    Path
        The folder (resolved if it was a link).

    Raises
    ------
    BadInput
        If ``out`` is a file, a non-empty folder that is not a workbench run, or a place the user cannot
        write to.
    """
    out = Path(out)
    if out.is_symlink():
        out = out.resolve()
    if out.exists():
        if not out.is_dir():
            raise BadInput(f"{what} {out} is an existing file; give a folder for the run's outputs")
        entries = [p for p in out.iterdir() if not p.name.startswith(".")]
        if entries and (not (out / REPORT_MARKER).is_file() or any(p.is_dir() for p in entries)):
            raise BadInput(f"{what} {out} is a folder that holds other things than a workbench run "
                           f"({', '.join(sorted(p.name for p in entries)[:4])}{', ...' if len(entries) > 4 else ''}); "
                           "a run replaces its output folder as a whole: choose a new or empty folder")
        if not os.access(out, os.W_OK | os.X_OK):
            raise BadInput(f"{what} {out}: no permission to write into this folder")
    ancestor = out.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise BadInput(f"{what} {out}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise BadInput(f"{what} {out}: no permission to create files in {ancestor}")
    return out


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux ``renameat2(RENAME_EXCHANGE)``; False where unsupported."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(a))


def swap_in(stage: Path, target: Path) -> None:
    """Make ``stage`` the folder at ``target`` in one step; the previous folder is removed after.

    On Linux ``renameat2(RENAME_EXCHANGE)`` swaps the two in one atomic step; elsewhere two renames
    (the previous folder is moved aside, then the stage into place).

    Parameters
    ----------
    stage : Path
        The finished folder, beside ``target`` (same file system).
    target : Path
        Where it goes; replaced if it exists.

    Returns
    -------
    None

    Raises
    ------
    OSError
        If a rename fails for a reason other than the exchange being unsupported.
    """
    if not target.exists():
        os.rename(stage, target)
        return
    if _exchange(stage, target):
        _remove(stage)  # now holds the previous run
        return
    old = _create_temp(target.parent, target.name, is_dir=True, kind=_OLD)
    old.rmdir()
    os.rename(target, old)
    os.rename(stage, target)
    _remove(old)


class StagedDir:
    """``with StagedDir(out) as stage:`` write the run into ``stage`` (a folder beside ``out``; a
    path-like, so ``stage / "x.csv"`` and ``write_report(res, stage)`` work); on success it replaces
    ``out`` as one unit, on any exception (Ctrl-C included) it is removed and ``out`` is untouched.
    :meth:`final` maps paths inside the stage to where they are after the swap.

    Files of the previous run that this run did not write are carried over (hard links, else
    copies); leftovers of killed runs are cleaned up on entry.

    Parameters
    ----------
    target : str or os.PathLike
        The output folder, checked at once with :func:`check_out_dir`.
    what : str, default "--out"
        The option's name, for the messages.

    Returns
    -------
    A StagedDir: a context manager whose ``__enter__`` returns itself, path-like inside the block.

    Raises
    ------
    BadInput
        If ``target`` is not a usable output folder, or the staging folder cannot be created.
    RuntimeError
        If used as a path outside its with-block.
    """

    def __init__(self, target: str | os.PathLike, what: str = "--out"):
        self.target = check_out_dir(target, what)
        self.what = what
        self.path: Path | None = None

    def __fspath__(self) -> str:
        return os.fspath(self._stage())

    def __truediv__(self, other) -> Path:
        return self._stage() / other

    def _stage(self) -> Path:
        if self.path is None:
            raise RuntimeError("StagedDir used outside its with-block")
        return self.path

    def __enter__(self) -> StagedDir:
        parent = self.target.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            clean_leftovers(self.target)
            self.path = _create_temp(parent, self.target.name, is_dir=True, kind=_STAGE)
        except OSError as exc:
            raise BadInput(f"{self.what} {self.target}: cannot write there ({exc.strerror or exc})") from None
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        stage = self._stage()
        if exc_type is not None:
            _remove(stage)
            return False
        try:
            self._carry_over(stage)
            swap_in(stage, self.target)
        except BaseException:
            _remove(stage)
            raise
        return False

    def _carry_over(self, stage: Path) -> None:
        """Keep the previous run's files that this run did not write (hard links, else copies)."""
        if not self.target.is_dir():
            return
        for p in self.target.iterdir():
            if p.name.startswith(".") or not p.is_file() or p.is_symlink() or (stage / p.name).exists():
                continue
            try:
                os.link(p, stage / p.name)
            except OSError:
                shutil.copy2(p, stage / p.name)

    def final(self, paths: dict[str, Path]) -> dict[str, Path]:
        """``paths`` with the staging folder replaced by the output folder.

        Parameters
        ----------
        paths : dict of str to Path
            Paths, e.g. as :func:`~workbench.report.write_report` returned them inside the stage.

        Returns
        -------
        dict of str to Path
            The same keys; paths inside the stage moved to the output folder, others unchanged.
        """
        stage = self._stage()
        return {k: (self.target / Path(v).relative_to(stage) if Path(v).is_relative_to(stage) else Path(v))
                for k, v in paths.items()}
