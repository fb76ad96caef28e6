"""The store's tills in the demo: a share of the shoppers who got an offer with a code show it at
the till before they leave, and the point of sale reports the redemption to the bridge's API
(`POST /v1/redemptions`, docs/redemptions.md) with the code and `"source": "pos"`.

Redemptions are due at a simulated time (while the shopper is still in the store) and made once the
gateway's radio clock has reached it: the till keeps pace with the simulation at any speed.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from edge.core import wire
from edge.demo.api_client import ApiClientError, EnrollmentApiClient

_LOGGER = logging.getLogger(__name__)

#: Of the shoppers who got a code, about this share use it (the same ones every run).
REDEEM_SHARE = 0.6
POLL_S = 0.1


def redeems(offer_id: str) -> bool:
    """Whether the shopper who got this offer uses its code at the till (deterministic)."""
    point = hashlib.sha256(b"demo-till:" + offer_id.encode()).digest()[0]
    return point < REDEEM_SHARE * 256


@dataclass(frozen=True, slots=True)
class Redemption:
    at_s: float  # radio time the shopper is at the till
    offer: wire.ShopperOffer
    shopper: str


class Till:
    """Reports each due redemption to the bridge; `on_redeemed(redemption, answer)` for the view."""

    def __init__(
        self,
        api: EnrollmentApiClient,
        store: str,
        radio_now: Callable[[], float],
        on_redeemed: Callable[[Redemption, dict[str, object]], None] | None = None,
    ) -> None:
        self._api = api
        self._store = store
        self._radio_now = radio_now
        self._on_redeemed = on_redeemed
        self._due: list[tuple[float, str, Redemption]] = []
        self._busy = 0
        self.redeemed = 0
        self.refused: Counter[str] = Counter()  # by the API's error code

    def schedule(self, redemption: Redemption) -> None:
        heapq.heappush(self._due, (redemption.at_s, redemption.offer.offer_id, redemption))

    @property
    def pending(self) -> int:
        """Redemptions not yet reported (due later, or being reported now)."""
        return len(self._due) + self._busy

    async def run(self) -> None:
        """Report redemptions as the radio clock reaches them, until cancelled."""
        while True:
            await asyncio.sleep(POLL_S)
            await self._report_due(self._radio_now())

    async def flush(self) -> None:
        """Report every redemption still waiting (the simulation has ended)."""
        await self._report_due(float("inf"))

    async def _report_due(self, now_s: float) -> None:
        while self._due and self._due[0][0] <= now_s:
            _, _, redemption = heapq.heappop(self._due)
            self._busy += 1
            try:
                await self._report(redemption)
            finally:
                self._busy -= 1

    async def _report(self, redemption: Redemption) -> None:
        body = {"code": redemption.offer.code, "store": self._store, "source": "pos"}
        try:
            reply = await self._api.request("POST", "/v1/redemptions", body)
        except ApiClientError as exc:
            self.refused["unreachable"] += 1
            _LOGGER.warning("redemption of %s not reported: %s", redemption.offer.offer_id, exc)
            return
        if reply.status != 201:
            error = str(reply.body.get("error", reply.status))
            self.refused[error] += 1
            _LOGGER.warning(
                "the bridge refused the redemption of %s: %s %s",
                redemption.offer.offer_id,
                reply.status,
                reply.body.get("message"),
            )
            return
        self.redeemed += 1
        if self._on_redeemed is not None:
            self._on_redeemed(redemption, reply.body)
