"""PRM scoring batched across searches: concurrent ``score`` calls share ONNX Runtime runs.

Each search encodes its own prefixes on its own thread and queues them. Whoever finds no run in
progress runs everything queued at that moment (sorted by length, so padding stays small, in
batches of ``max_batch``), hands every caller its rows, and goes on while more has queued; the
others wait for their rows (flat combining: no thread of its own, and a lone search scores with no
hand-off; ONNX Runtime's intra-op pool is the session's, whichever thread calls it). The energy of
each run is charged to the searches by the tokens each had in it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np

from edge_adapt.prm.format import EncodedPrefix


@dataclass(eq=False)
class _Request:
    encoded: list[EncodedPrefix]
    payer: Hashable | None
    rows: list[np.ndarray | None] = field(default_factory=list)
    runs: int = 0
    padded_tokens: int = 0
    error: BaseException | None = None
    done: bool = False


class SharedRuns:
    """Runs the prefixes of concurrent callers together (see the module's docstring)."""

    def __init__(self, run_batch: Callable[[list[EncodedPrefix]], np.ndarray], max_batch: int) -> None:
        self._run_batch = run_batch
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[_Request] = []
        self._running = False
        self.runs = 0  # ONNX runs, and the callers' requests they carried (their ratio: requests per run)
        self.requests = 0

    def run(self, encoded: list[EncodedPrefix], payer: Hashable | None = None) -> tuple[list[np.ndarray], int, int]:
        """Probabilities [len, levels] for each prefix, and this caller's share of runs and padded tokens."""
        request = _Request(encoded, payer, [None] * len(encoded))
        with self._cond:
            self._queue.append(request)
            while not request.done and self._running:
                self._cond.wait()
            drive = not request.done
            self._running = self._running or drive
        if drive:
            try:
                while True:
                    with self._cond:
                        batch, self._queue = self._queue, []
                        if not batch:
                            break
                    self._score(batch)
                    with self._cond:
                        self._cond.notify_all()
            finally:
                with self._cond:
                    self._running = False
                    self._cond.notify_all()
        if request.error is not None:
            raise request.error
        return request.rows, request.runs, request.padded_tokens  # type: ignore[return-value]

    def _score(self, requests: list[_Request]) -> None:
        items = [(r, i, e) for r in requests for i, e in enumerate(r.encoded)]
        items.sort(key=lambda item: len(item[2].input_ids))
        self.requests += len(requests)
        try:
            for start in range(0, len(items), self.max_batch):
                chunk = items[start : start + self.max_batch]
                probs = self._run_batch([e for _, _, e in chunk])
                self.runs += 1
                shares: dict[Hashable, float] = {}
                for row, (request, index, enc) in enumerate(chunk):
                    request.rows[index] = probs[row]
                    if request.payer is not None:
                        shares[request.payer] = shares.get(request.payer, 0.0) + len(enc.input_ids)
                for request in {id(r): r for r, _, _ in chunk}.values():
                    request.runs += 1
                    request.padded_tokens += probs.shape[1] * sum(1 for r, _, _ in chunk if r is request)
                if shares:
                    next(iter(shares)).charge(shares)  # type: ignore[attr-defined]
        except BaseException as exc:
            for request in requests:
                request.error = exc
        for request in requests:
            request.done = True
