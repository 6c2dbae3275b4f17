"""How long to wait before trying again: one exponential formula for every retry in the
agent (a failed renewal, a transient CA failure, a poll, a Redis reconnection), each
with its own named first step, cap and jitter."""

from __future__ import annotations

from datetime import timedelta

# Retry after a failed renewal: exponential from a minute to a few hours, with +-25 % jitter.
FIRST_BACKOFF = timedelta(minutes=1)
MAX_BACKOFF = timedelta(hours=4)
BACKOFF_JITTER = 0.25
# Never wait longer than this share of the time left before retrying a failed renewal.
BACKOFF_SHARE_OF_TIME_LEFT = 1 / 4
MIN_BACKOFF = timedelta(seconds=5)
# Expired, or under 1 % of its lifetime left: retry at least this often (Let's Encrypt
# allows 5 failed validations per name and hour; a Retry-After still counts).
URGENT_BACKOFF = timedelta(minutes=5)
URGENT_SHARE = 0.01


def exponential(attempt: int, first: float, cap: float, rand: float, jitter: float) -> float:
    """Seconds before retry number ``attempt`` (1, 2, ...): ``first * 2^(attempt-1)``,
    at most ``cap``, then spread by +-``jitter`` (a share) with ``rand`` in [0, 1)."""
    exponent = min(max(attempt, 1) - 1, 60)
    delay = min(first * 2.0**exponent, cap)
    return delay * (1 - jitter + 2 * jitter * rand)


def backoff(
    failures: int, time_left: timedelta, rand: float, lifetime: timedelta | None = None
) -> timedelta:
    """How long to wait after the ``failures``-th failed renewal in a row: exponential with
    jitter, capped, and never more than a share of the time the certificate has left; once
    it has expired (or under URGENT_SHARE of its ``lifetime`` is left) at most
    URGENT_BACKOFF: a certificate that is out of time waits least, not longest. (No
    certificate yet, ``lifetime`` None: the plain exponential, which spares the CA's
    failed-validation limits while a new name is set up.)"""
    seconds = exponential(
        failures, FIRST_BACKOFF.total_seconds(), MAX_BACKOFF.total_seconds(), rand, BACKOFF_JITTER
    )
    delay = timedelta(seconds=seconds)
    urgent = lifetime is not None and (
        time_left <= timedelta(0) or time_left < lifetime * URGENT_SHARE
    )
    if urgent:  # no share of the (tiny) time left: that would be a retry every few seconds
        return min(delay, URGENT_BACKOFF * (1 - BACKOFF_JITTER + 2 * BACKOFF_JITTER * rand))
    if time_left > timedelta(0):
        delay = min(delay, time_left * BACKOFF_SHARE_OF_TIME_LEFT)
    return max(delay, MIN_BACKOFF)
