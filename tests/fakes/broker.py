"""A private Mosquitto for tests: the real implementation lives in edge.adapters.mosquitto (the demo
uses it too); this module is where tests import it from, next to the other fakes."""

from __future__ import annotations

from edge.adapters.mosquitto import (
    MosquittoError,
    MosquittoProcess,
    free_loopback_port,
    write_password_file,
)

__all__ = ["MosquittoError", "MosquittoProcess", "free_loopback_port", "write_password_file"]
