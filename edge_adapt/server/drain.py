"""Shutdown that finishes what it started: on SIGTERM (or Ctrl-C) new ``/v1`` requests get 503,
requests in flight (streams included) run to their end for up to a grace period, then uvicorn
stops and the process exits 0. A second signal stops at once.

uvicorn's own handler stops accepting and closes idle connections at once, and re-raises the
signal after shutdown (so the process dies by it, not with 0); a streaming response library
that watches the same signal cancels its streams. Hence this subclass.
"""

from __future__ import annotations

import logging
import threading
import time
from types import FrameType

import uvicorn

from edge_adapt.server.gate import Traffic

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, traffic: Traffic, grace_s: float) -> None:
        super().__init__(config)
        self.traffic = traffic
        self.grace_s = grace_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.traffic.draining or not self.started:
            super().handle_exit(sig, frame)  # a second signal, or nothing started yet: uvicorn's own
            return
        self.traffic.draining = True
        log.warning("shutting down: new requests get 503; waiting up to %g s for %d in flight", self.grace_s,
                    self.traffic.in_flight)
        threading.Thread(target=self._drain, name="edge-adapt-drain", daemon=True).start()

    def _drain(self) -> None:
        deadline = time.monotonic() + self.grace_s
        while self.traffic.in_flight > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.traffic.in_flight:
            log.warning("%d requests still in flight after %g s: stopping them", self.traffic.in_flight, self.grace_s)
        self.should_exit = True
