"""Safe extraction of a zipped model folder (a transformers ``save_pretrained`` folder or a workbench
model folder, zipped to upload it to the app or to pass it as one file to ``--model``).

A zip is user input like any other: member names may try to escape the destination
(``../../.bashrc``, absolute paths, drive letters), members may be symbolic links, and declared
sizes may decompress to far more than the file holds. :func:`safe_extract` refuses all of these
*before* writing anything, with :class:`~workbench.errors.BadInput`, and writes only regular files
below the destination (``zipfile`` stops each member at its declared size, which is checked first
against the ``data_bytes`` limit of :mod:`workbench.limits`).
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath

from .errors import BadInput, require

MAX_MEMBERS = 10_000


def _member_path(name: str, source: str) -> PurePosixPath | None:
    """The member's relative path, or None for a folder entry; BadInput if it would leave the folder."""
    if name.endswith("/"):
        return None
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]) or name.startswith("/"):
        raise BadInput(f"{source}: refused member {name!r}: it would be written outside the folder")
    return p


def safe_extract(zip_path: str | Path, dest: str | Path) -> Path:
    """Extract ``zip_path`` into the (empty or new) folder ``dest``; return the folder that holds the
    model: ``dest`` itself, or its single top-level folder when the zip wraps everything in one.

    Parameters
    ----------
    zip_path : str or Path
        The zip file.
    dest : str or Path
        The folder to extract into (created if missing).

    Returns
    -------
    Path
        The folder holding the model: ``dest`` or its single top-level folder.

    Raises
    ------
    BadInput
        For a file that is not a zip, a member outside the folder, a symbolic link, more than
        10,000 members (:data:`MAX_MEMBERS`), an archive without files, or a declared total size over
        the ``data_bytes`` limit.
    """
    from . import limits

    zip_path, dest = Path(zip_path), Path(dest)
    source = zip_path.name
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise BadInput(f"{source}: not a valid zip archive ({exc})") from None
    with zf:
        infos = zf.infolist()
        require(len(infos) <= MAX_MEMBERS, f"{source}: {len(infos):,} members, more than {MAX_MEMBERS:,}")
        plan = []
        for info in infos:
            rel = _member_path(info.filename, source)
            if rel is None:
                continue
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise BadInput(f"{source}: refused member {info.filename!r}: symbolic links are not extracted")
            plan.append((info, rel))
        require(plan, f"{source}: the archive holds no files")
        limits.check("data_bytes", sum(i.file_size for i, _ in plan), f"{source}: the archive's files decompress "
                                                                         "to a size that")
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        for info, rel in plan:
            target = (dest / Path(*rel.parts)).resolve()
            require(root in target.parents, f"{source}: refused member {info.filename!r}: outside the folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
                raise BadInput(f"{source}: cannot extract {info.filename!r} ({exc})") from None
    tops = {rel.parts[0] for _, rel in plan}
    if len(tops) == 1 and all(len(rel.parts) > 1 for _, rel in plan):
        return dest / next(iter(tops))
    return dest
