"""Files the commands write (exported code, plots, reports), checked before any work.

A typo in ``-o`` should cost one line of error before a long study, not a traceback at
its end, and must never overwrite what a search recorded: no command writes over the
database it reads or over any other SQLite file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff",
                  ".webp")
_SQLITE_HEADER = b"SQLite format 3\x00"
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")  # an SQLite file's companions


class OutputError(Exception):
    """An output file that cannot or must not be written."""


def is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER
    except OSError:
        return False


def check_output(path: Path, db_path: Path | None = None, image: bool = False) -> Path:
    """``path`` if it can be written: its folder exists, it is not a folder, the database
    or another SQLite file, and an image's suffix names a format matplotlib writes."""
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder")
    if not path.resolve().parent.is_dir():
        raise OutputError(f"cannot write {path}: folder {path.parent} does not exist")
    if db_path is not None and path.resolve() == Path(db_path).resolve():
        raise OutputError(f"will not write over {path}: it is the database (--db)")
    if path.is_file() and is_sqlite(path):
        raise OutputError(f"will not write over {path}: it is an SQLite database")
    for side in SQLITE_SIDE_FILES:
        if not path.name.endswith(side) or path.name == side:
            continue
        owner = path.with_name(path.name[:-len(side)])
        if is_sqlite(owner) or (db_path is not None
                                 and owner.resolve() == Path(db_path).resolve()):
            raise OutputError(f"will not write over {path}: it is part of the SQLite "
                              f"database {owner}")
    if image and path.suffix.lower() not in IMAGE_SUFFIXES:
        raise OutputError(f"cannot write {path}: an image file needs one of the suffixes "
                          f"{', '.join(IMAGE_SUFFIXES)}")
    try:  # the folder takes a file: checked now, before any work
        tempfile.TemporaryFile(dir=path.resolve().parent).close()
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def save_figure(fig: Any, path: Path) -> None:
    """``fig.savefig(path)``, closing the figure either way."""
    import matplotlib.pyplot as plt

    try:
        fig.savefig(path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
