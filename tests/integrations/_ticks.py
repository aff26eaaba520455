"""A task that counts the turns an event loop gives it: a loop held by a blocking call gives
none while it is held."""

from __future__ import annotations

import anyio


class Ticks:
    def __init__(self) -> None:
        self.count = 0

    async def run(self) -> None:
        """Sleep 20 ms at a time, counting, until cancelled."""
        while True:
            await anyio.sleep(0.02)
            self.count += 1
