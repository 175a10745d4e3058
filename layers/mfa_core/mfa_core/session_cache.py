"""An in-memory cache of session reads for the Lambda authorizer.

The authorizer runs before every request to a protected API, so it keeps each read of a
session and its user for a few seconds instead of reading DynamoDB on every request. The
authorizer checks the cached items on every use (expiry, status, `sessions_valid_after`), so
only a change to the items themselves, such as a logout or a disabled user, waits for the TTL.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from mfa_core.store.models import SessionModel, UserModel

SessionRead = tuple[SessionModel | None, UserModel | None]
# Session id, org id, user id: the keys that Store.load_session_and_user reads.
SessionKey = tuple[str, str, str]

# Entries kept per process, which bounds its memory. A session dropped for room is read again
# on its next request.
MAX_ENTRIES = 2048


class SessionCache:
    """Reads (session, user) pairs through `load` and keeps each for `ttl_seconds`.

    `ttl_seconds` 0 turns the cache off. Time comes from `now`, so tests move it with a clock.
    The least recently used entry is dropped beyond `max_entries`.
    """

    def __init__(
        self,
        load: Callable[[str, str, str], SessionRead],
        *,
        ttl_seconds: int,
        now: Callable[[], float],
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self._load = load
        self._ttl = ttl_seconds
        self._now = now
        self._max_entries = max_entries
        self._entries: OrderedDict[SessionKey, tuple[float, SessionRead]] = OrderedDict()
        # The local stack serves requests on several threads in one process.
        self._lock = threading.Lock()

    def get(self, session_id: str, org_id: str, user_id: str) -> SessionRead:
        """Return the session and its user, read within the last `ttl_seconds`."""
        if self._ttl <= 0:
            return self._load(session_id, org_id, user_id)
        key = (session_id, org_id, user_id)
        now = self._now()
        with self._lock:
            cached = self._entries.get(key)
            # A read stamped in the future means the clock went back: read again.
            if cached is not None and 0 <= now - cached[0] < self._ttl:
                self._entries.move_to_end(key)
                return cached[1]

        read = self._load(session_id, org_id, user_id)
        with self._lock:
            self._entries[key] = (now, read)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return read

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
