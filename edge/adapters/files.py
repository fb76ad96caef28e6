"""Reading the small files a process is configured with (keys, certificates, configs, tokens).

A path in a config is as hostile as the bytes in the file: opening a FIFO for reading blocks until
a writer comes (for ever, before the process says READY or feeds its watchdog), and a device such
as /dev/zero never ends. `read_regular_file` opens without blocking, refuses anything but a
regular file, and reads at most a bound.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

#: Enough for any key, certificate chain, config or tokens file of ours.
MAX_SMALL_FILE_BYTES = 1 << 20


def read_regular_file(
    path: Path, max_bytes: int = MAX_SMALL_FILE_BYTES
) -> tuple[bytes, os.stat_result]:
    """The content and stat of the regular file at `path`; OSError with a `strerror` a person can
    read for a FIFO, device or directory (EINVAL) or a file over `max_bytes` (EFBIG), as for a
    missing or unreadable one."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(
                errno.EINVAL, "not a regular file (a directory, FIFO or device)", str(path)
            )
        chunks = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, min(65536, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise OSError(errno.EFBIG, f"larger than {max_bytes} bytes", str(path))
        return b"".join(chunks), st
    finally:
        os.close(fd)
