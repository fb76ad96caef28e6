"""The radio's health as every radio source reports it (status topic, status LED, scan view)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RadioState(enum.Enum):
    STARTING = "starting"
    SCANNING = "scanning"
    RECOVERING = "recovering"  # a stall or fault was seen; a recovery step is under way
    FAILED = "failed"  # recovery gave up: the service exits non-zero so systemd restarts it
    STOPPED = "stopped"  # the source ended on purpose (a simulation or replay finished)


@dataclass(frozen=True, slots=True)
class RadioHealth:
    """A snapshot; `last_advert_age_s` is None before the first advert."""

    source: str
    state: RadioState
    adverts_per_s: float = 0.0
    last_advert_age_s: float | None = None
    recoveries: int = 0
    last_error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "state": self.state.value,
            "adverts_per_s": round(self.adverts_per_s, 1),
            "last_advert_age_s": (
                None if self.last_advert_age_s is None else round(self.last_advert_age_s, 1)
            ),
            "recoveries": self.recoveries,
            "last_error": self.last_error,
        }
