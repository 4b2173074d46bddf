"""Folders that appear whole or not at all: build beside the destination, then rename into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Callable, Iterator, Optional


@contextmanager
def atomic_dir(final: str, complete: Optional[Callable[[str], bool]] = None) -> Iterator[str]:
    """Yield a temp folder beside `final`; when the block ends without error it replaces `final`.

    A crash leaves only a `.tmp-*` folder, never a half `final`. `complete(final)` says whether a folder is a
    finished one: a concurrent writer's finished `final` is kept and losing the rename to it is no error.
    """
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(final)}-", dir=parent)
    try:
        yield tmp
        if not (complete and complete(final)):
            shutil.rmtree(final, ignore_errors=True)  # an older or interrupted one
        try:
            os.rename(tmp, final)
        except OSError:
            if not (complete and complete(final)):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
