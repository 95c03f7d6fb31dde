"""When a gRPC ingest worker that died is started again: the restart backoff. Pure.

A worker that dies soon after it started (a defect at start, a database that refuses its
connections) would die again at once: each restart in a row waits twice as long as the one
before, from :attr:`RestartPolicy.first_delay_s` up to :attr:`RestartPolicy.max_delay_s`.
A worker that ran :attr:`RestartPolicy.stable_after_s` or longer before it died starts
the count again, so that one crash a day is restarted quickly every time.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RestartPolicy"]


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """The restart backoff of a worker (see the module documentation).

    Attributes:
        first_delay_s: The wait before the first restart in a row.
        max_delay_s: The longest wait.
        stable_after_s: A worker that ran this long before it died starts the count again.

    Raises:
        ValueError: A delay below 0, ``max_delay_s`` below ``first_delay_s``, or a
            ``stable_after_s`` below 0.
    """

    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    stable_after_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 <= self.first_delay_s <= self.max_delay_s or not self.stable_after_s >= 0:
            raise ValueError(
                "RestartPolicy: need 0 <= first_delay_s <= max_delay_s and stable_after_s >= 0;"
                f" got {self.first_delay_s!r}, {self.max_delay_s!r}, {self.stable_after_s!r}"
            )

    def failures(self, before: int, *, started: float, now: float) -> int:
        """The deaths in a row once a worker started at ``started`` died at ``now``.

        Args:
            before: The deaths in a row before this one (0 for a worker's first start).
            started: When the worker that died was started (monotonic seconds).
            now: When it died (same clock).

        Returns:
            1 after a stable run, else ``before + 1``.
        """
        if now - started >= self.stable_after_s:
            return 1
        return max(0, before) + 1

    def delay_s(self, failures: int) -> float:
        """How long to wait before starting a worker again after ``failures`` deaths in a
        row (at least 1): ``first_delay_s`` doubled each time, at most ``max_delay_s``."""
        if failures <= 1:
            return self.first_delay_s
        # 2 ** 64 is far past any max_delay_s; the cap keeps the power small.
        return min(self.max_delay_s, self.first_delay_s * 2.0 ** min(failures - 1, 64))
