"""API keys: `Authorization: Bearer <key>`, keys from an environment variable, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer


def parse_api_keys(value: str | None) -> list[str]:
    """Keys from a comma-separated string (blanks dropped); none means no auth."""
    return [key.strip() for key in (value or "").split(",") if key.strip()]


def api_key_dependency(keys: list[str]) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency that answers 401 unless the request carries one of `keys`.

    Raises:
        ValueError: no keys (leave the dependency off instead).
    """
    if not keys:
        raise ValueError("api_key_dependency needs at least one key")
    expected = [key.encode() for key in keys]
    bearer = HTTPBearer(auto_error=False, description="One of the keys in the service's API key variable.")

    async def require_api_key(credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
        given = credentials.credentials.encode() if credentials is not None else b""
        if not any([hmac.compare_digest(given, key) for key in expected]):  # a list: every key compared
            raise HTTPException(401, "missing or invalid API key (send Authorization: Bearer <key>)",
                                headers={"WWW-Authenticate": "Bearer"})

    return require_api_key
