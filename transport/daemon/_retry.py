"""What the Manager client does after a call fails: retry, re-register or drop. PURE.

Theory of operation
-------------------
The seed's ``RetryWithBackoff`` (004 section 7.2) multiplies a base delay after every failed
attempt and caps it. We keep that and add jitter, so that a fleet of daemons that lost
their Manager at the same moment does not come back at the same moment:
:meth:`Backoff.delay` takes the attempt number and a random number in ``[0, 1)`` (drawn by
the caller; nothing here reads a clock or a random source) and returns a delay between
``(1 - jitter)`` times the nominal delay and the nominal delay itself, never above
``max_s``.

Which failures are worth retrying is a table from the gRPC status (:data:`DISPOSITIONS`):

* ``UNAVAILABLE`` and ``DEADLINE_EXCEEDED`` mean the Manager could not be reached or did
  not answer in time: the connection is considered lost, the daemon reconnects (and
  registers again) with backoff, and what it could not deliver waits in the spool.
* ``NOT_FOUND`` and ``FAILED_PRECONDITION`` from a Manager mean it does not know this node:
  register again, then retry.
* ``INVALID_ARGUMENT`` (and the other statuses that say "this request will never be
  accepted") drop the request: retrying cannot help, the reason is logged and counted.
* Everything else (``INTERNAL``, ``RESOURCE_EXHAUSTED``, ``UNAUTHENTICATED``, ...) is
  retried with backoff without dropping anything: a Manager's bug or a certificate being
  rotated must not lose reports.

A response that arrives but says ``success: false`` is judged by
:func:`answer_disposition`: a message saying the node is unknown (or the
:data:`REGISTER_METADATA_KEY` metadata our Manager may send) asks for a registration;
anything else is retried a few times (:data:`MAX_REFUSALS`) and then dropped.

Imports nothing but the standard library and transport's error codes.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from transport._errors import StatusCode

__all__ = [
    "DISPOSITIONS",
    "MAX_REFUSALS",
    "REGISTER_METADATA_KEY",
    "Backoff",
    "Disposition",
    "answer_disposition",
    "disposition",
    "is_connection_loss",
]


class Disposition(enum.Enum):
    """What to do with a request whose call failed."""

    RECONNECT = "reconnect"
    """The Manager is unreachable: reconnect with backoff, keep the request."""
    REGISTER = "register"
    """The Manager does not know this node: register again, then retry."""
    RETRY = "retry"
    """Retry the same request later, with backoff."""
    DROP = "drop"
    """Never retry: the Manager will not accept this request (counted and logged)."""


DISPOSITIONS: dict[StatusCode, Disposition] = {
    StatusCode.UNAVAILABLE: Disposition.RECONNECT,
    StatusCode.DEADLINE_EXCEEDED: Disposition.RECONNECT,
    StatusCode.CANCELLED: Disposition.RECONNECT,  # the channel was closed under the call
    StatusCode.NOT_FOUND: Disposition.REGISTER,
    StatusCode.FAILED_PRECONDITION: Disposition.REGISTER,
    StatusCode.INVALID_ARGUMENT: Disposition.DROP,
    StatusCode.OUT_OF_RANGE: Disposition.DROP,
    StatusCode.UNIMPLEMENTED: Disposition.DROP,
    StatusCode.ALREADY_EXISTS: Disposition.DROP,
    StatusCode.DATA_LOSS: Disposition.DROP,
    StatusCode.UNKNOWN: Disposition.RETRY,
    StatusCode.INTERNAL: Disposition.RETRY,
    StatusCode.RESOURCE_EXHAUSTED: Disposition.RETRY,
    StatusCode.ABORTED: Disposition.RETRY,
    StatusCode.UNAUTHENTICATED: Disposition.RETRY,
    StatusCode.PERMISSION_DENIED: Disposition.RETRY,
}
"""The disposition of every non-OK status."""

MAX_REFUSALS = 5
"""How often a request answered ``success: false`` is sent before it is dropped."""

REGISTER_METADATA_KEY = "hostvisor-register"
"""Response metadata by which our Manager asks a daemon to register again (any value)."""

# How a Manager says it does not know the node, in a success=false message.
_UNKNOWN_NODE = re.compile(
    r"not (?:been )?regist|unregistered|unknown node|node (?:\S+ )?not found|no such node"
    r"|register (?:first|again)",
    re.IGNORECASE,
)


def disposition(status: StatusCode) -> Disposition:
    """What to do after a call failed with ``status``.

    Args:
        status: The call's non-OK status.

    Returns:
        The disposition (:data:`DISPOSITIONS`; ``RETRY`` for anything not listed).
    """
    return DISPOSITIONS.get(status, Disposition.RETRY)


def is_connection_loss(status: StatusCode) -> bool:
    """Whether ``status`` means the Manager could not be reached (error D2001)."""
    return disposition(status) is Disposition.RECONNECT


def answer_disposition(
    success: bool, message: str, metadata: Iterable[tuple[str, str]] = (), *, refusals: int = 0
) -> Disposition | None:
    """What to do after the Manager answered a request.

    Args:
        success: The response's ``success``.
        message: The response's ``message``.
        metadata: The response's metadata (initial and trailing).
        refusals: How often this request was answered ``success: false`` before.

    Returns:
        None when the request is done (``success: true`` and no request to register);
        ``REGISTER`` when the Manager asks for a registration (by metadata, or a
        ``success: false`` whose message says the node is unknown); otherwise ``RETRY``
        for a refusal, until :data:`MAX_REFUSALS` refusals, then ``DROP``.
    """
    if any(key.lower() == REGISTER_METADATA_KEY for key, _ in metadata):
        return Disposition.REGISTER
    if success:
        return None
    if _UNKNOWN_NODE.search(message):
        return Disposition.REGISTER
    return Disposition.RETRY if refusals + 1 < MAX_REFUSALS else Disposition.DROP


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with jitter: the seed's RetryConfig without MaxRetries.

    Attributes:
        base_s: The nominal delay after the first failure (> 0).
        max_s: The longest delay (>= base_s).
        multiplier: How much the nominal delay grows per failure (>= 1).
        jitter: The fraction of the nominal delay that may be taken off at random
            (0 to 1; 0: no jitter).

    Raises:
        ValueError: A value outside its range.
    """

    base_s: float
    max_s: float
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        for name, value in (("base_s", self.base_s), ("max_s", self.max_s)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"Backoff.{name}: expected a positive number; got {value!r}")
        if self.max_s < self.base_s:
            raise ValueError(f"Backoff.max_s ({self.max_s!r}) is below base_s ({self.base_s!r})")
        if not (math.isfinite(self.multiplier) and self.multiplier >= 1):
            raise ValueError(f"Backoff.multiplier: expected >= 1; got {self.multiplier!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"Backoff.jitter: expected 0 to 1; got {self.jitter!r}")

    def nominal(self, attempt: int) -> float:
        """The delay before retry number ``attempt + 1``, without jitter.

        Args:
            attempt: Failures so far, minus one (0 after the first failure); negative
                counts as 0.

        Returns:
            ``base_s * multiplier ** attempt``, capped at ``max_s``.
        """
        attempt = max(0, attempt)
        if self.multiplier == 1:
            return self.base_s
        # Past this many doublings the cap has long been reached (and ** would overflow).
        limit = math.log(self.max_s / self.base_s, self.multiplier) + 1
        if attempt >= limit:
            return self.max_s
        return min(self.max_s, self.base_s * self.multiplier**attempt)

    def delay(self, attempt: int, rand: float) -> float:
        """The delay before the next try, with jitter.

        Args:
            attempt: As for :meth:`nominal`.
            rand: A random number in ``[0, 1)`` (``random.random()``); values outside
                are clamped.

        Returns:
            A delay in ``[(1 - jitter) * nominal, nominal]``, so never above ``max_s``
            and never 0 unless ``jitter`` is 1.
        """
        rand = min(max(rand, 0.0), 1.0)
        return self.nominal(attempt) * (1.0 - self.jitter * rand)
