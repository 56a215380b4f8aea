"""Output files that appear whole or not at all: a killed or failed write never leaves half a file (which a resume
or `petmd compare` would then misread) nor a temporary file behind."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


@contextmanager
def atomic_output(path: str | Path, mode: str = "wb", **open_args: Any) -> Iterator[IO[Any]]:
    """A file object for ``path``: written to a hidden temporary file beside it, flushed to disk and renamed over
    ``path`` when the block ends; an exception in the block removes the temporary file and leaves ``path`` as it
    was. (A SIGKILL inside the block leaves the temporary file; ``path`` is still untouched.)"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode, **open_args) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)  # the rename itself reaches the disk
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
