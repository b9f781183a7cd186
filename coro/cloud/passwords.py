"""Password hashing: argon2id (argon2-cffi's RFC 9106 low-memory profile).

Each hash takes tens of milliseconds and 64 MiB, so it runs in a worker thread, and a
semaphore bounds how many run at once: a burst of logins queues instead of exhausting
the machine's memory.
"""

from __future__ import annotations

import asyncio
import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_PASSWORD = 8
#: Long enough for any passphrase or generated password; bounds the work per request.
MAX_PASSWORD = 256

_hasher = PasswordHasher()


class Passwords:
    def __init__(self, concurrency: int = 2) -> None:
        self._slots = asyncio.Semaphore(concurrency)

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(_hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """Whether `password` matches `stored`. With no stored hash (an unknown account,
        or one that signs in only with GitHub) a dummy hash is checked, so the answer
        takes as long either way and does not tell which accounts exist."""
        async with self._slots:
            matched = await asyncio.to_thread(_matches, stored or _dummy_hash(), password)
        return matched and stored is not None

    @staticmethod
    def needs_rehash(stored: str) -> bool:
        return _hasher.check_needs_rehash(stored)


def _matches(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash("not a password anyone has")
