"""The data dir is private: only the user the server runs as may read it.

It holds prompts (invocation logs, batch inputs and outputs), the metadata database, the
audit log, credentials and model weights. ``outcrop serve`` sets :data:`PRIVATE_UMASK` for
the whole process (its threads and the copies it starts), so every file it creates is 0600
and every folder 0700, and :func:`make_private` closes a data dir that an older version or
a ``mkdir`` left open. Files with secrets or prompts are also opened 0600 explicitly, so an
embedding that skips ``serve`` keeps them private too.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("outcrop.store")

# Group and others get nothing: rw------- files, rwx------ folders.
PRIVATE_UMASK = 0o077
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def make_private(data_dir: Path) -> bool:
    """Create ``data_dir`` as 0700, or tighten it to 0700 if group/others may enter it; True if tightened."""
    data_dir.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    mode = stat.S_IMODE(data_dir.stat().st_mode)
    if not mode & 0o077:
        return False
    os.chmod(data_dir, PRIVATE_DIR_MODE)
    log.warning(
        "the data dir was readable by other users; tightened it to 0700",
        extra={"data_dir": str(data_dir), "was": oct(mode)},
    )
    return True


def open_private_append(path: Path) -> int:
    """An O_APPEND file descriptor of ``path``, created 0600 if new (for ``os.fdopen``)."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE)
