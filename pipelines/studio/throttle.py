"""Login throttling: a few wrong passwords in a row lock a (user name, address) pair out for a while, with
waits that double at each new lockout; a looser cap per address stops one machine trying many names.

While locked, no password is checked at all (the right one is refused too), so a lockout costs a guesser
time and tells nothing. A successful login clears its pair's count; counts with no failure for longer
than the longest wait start afresh (a team behind one address is not punished for last week's typos).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class _Record:
    failures: int = 0  # consecutive failures
    lockouts: int = 0  # lockouts so far: each doubles the next wait
    until: float = 0.0  # locked until this time
    last: float = 0.0


@dataclass(frozen=True)
class Lockout:
    """A lockout that has just begun: whose, and for how long."""

    user: str
    address: str
    seconds: float
    whole_address: bool  # the per-address cap, not the pair's


class LoginThrottle:
    """``wait(user, address)`` says how long a login must wait; ``failed`` and ``succeeded`` record outcomes."""

    def __init__(self, max_failures: int = 5, lockout_s: float = 30.0, max_lockout_s: float = 900.0,
                 address_failures: int = 30, clock=time.monotonic):
        if max_failures < 1 or address_failures < 1:
            raise ValueError("The login failure limits must be at least 1.")
        if lockout_s <= 0 or max_lockout_s < lockout_s:
            raise ValueError("The lockout must be longer than 0 s and the longest lockout at least as long.")
        self.max_failures, self.address_failures = max_failures, address_failures
        self.lockout_s, self.max_lockout_s = lockout_s, max_lockout_s
        self._clock = clock
        self._pairs: dict[tuple[str, str], _Record] = {}
        self._addresses: dict[str, _Record] = {}
        self._guard = threading.Lock()

    def wait(self, user: str, address: str) -> float:
        """Seconds until ``user`` may try again from ``address`` (0: now)."""
        now = self._clock()
        with self._guard:
            pair, place = self._pairs.get((user, address)), self._addresses.get(address)
            return max([0.0, *(record.until - now for record in (pair, place) if record is not None)])

    def failed(self, user: str, address: str) -> Lockout | None:
        """Count a wrong password; returns the lockout it starts, if any."""
        now = self._clock()
        with self._guard:
            self._forget_idle(now)
            pair = self._pairs.setdefault((user, address), _Record())
            place = self._addresses.setdefault(address, _Record())
            started = None
            for record, limit, whole in ((place, self.address_failures, True), (pair, self.max_failures, False)):
                if now - max(record.last, record.until) > self.max_lockout_s:  # quiet for long: a fresh start
                    record.failures = record.lockouts = 0
                record.failures += 1
                record.last = now
                if record.failures >= limit:
                    seconds = min(self.lockout_s * 2 ** record.lockouts, self.max_lockout_s)
                    record.lockouts += 1
                    record.failures = limit - 1  # after the wait, one more failure locks again (for longer)
                    record.until = now + seconds
                    started = Lockout(user, address, seconds, whole)
            return started

    def succeeded(self, user: str, address: str) -> None:
        with self._guard:
            self._pairs.pop((user, address), None)

    def _forget_idle(self, now: float) -> None:
        if len(self._pairs) + len(self._addresses) < 10_000:
            return
        horizon = now - 2 * self.max_lockout_s
        for table in (self._pairs, self._addresses):
            for key in [key for key, record in table.items() if record.last < horizon and record.until < now]:
                del table[key]
