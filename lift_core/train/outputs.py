"""Final outputs of a training run (an adapter dir, model weights) written whole or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from typing import Callable

from lift_core import storage


def write_dir(out_uri: str, write: Callable[[str], None]) -> str:
    """Run ``write(local_dir)`` and put the result at ``out_uri`` (renamed into place when local)."""
    local = storage.local_path(out_uri)
    if local is not None:
        tmp = f"{local}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            write(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if os.path.exists(local):
            shutil.rmtree(local)
        os.rename(tmp, local)
        return out_uri
    with tempfile.TemporaryDirectory(prefix="lift-out-") as tmp:
        write(tmp)
        fs, path = storage.fs_and_path(out_uri)
        fs.put(tmp.rstrip("/") + "/", path.rstrip("/"), recursive=True)
    return out_uri
