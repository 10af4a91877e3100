"""Who is calling: Meshery's local provider, or bearer tokens mapped to users.

Local mode mirrors Meshery's local provider, where every request is the one
local user; it is only safe on loopback. Token mode accepts a token from the
places Meshery clients put it: the ``token`` cookie on the upgrade request
(with ``meshery-provider``, as Meshery's docs say), an ``Authorization:
Bearer`` header, or graphql-ws ``connectionParams.Authorization`` (which
Meshery itself ignores, though its third-party docs tell clients to use it).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._app import AuthError, Context

#: The local user's fixed id (like Meshery's local provider, one user for all).
LOCAL_USER_ID = "7f3f8b9e-4a55-4d36-9c1e-6d6f63616c00"


@dataclass(frozen=True)
class User:
    """What ``ctx.auth`` holds for Meshery resolvers and streamers."""

    id: str
    user_name: str = ""
    provider: str = "Local"


LOCAL_USER = User(LOCAL_USER_ID, "meshery", "Local")

TokenSource = Mapping[str, "str | User | Mapping[str, Any]"] | str | os.PathLike[str]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _to_user(value: str | User | Mapping[str, Any]) -> User:
    if isinstance(value, User):
        return value
    if isinstance(value, str):
        if not value.strip():  # every such token would be one nameless user
            raise ValueError("a token maps to an empty user id")
        return User(value, value, "Meshery")
    if isinstance(value, Mapping) and str(value.get("id") or "").strip():
        return User(str(value["id"]), str(value.get("user_name") or value["id"]), "Meshery")
    raise ValueError(f"a token must map to a user id or {{'id': ...}}, got {value!r}")


def load_tokens(source: TokenSource) -> dict[str, User]:
    """Read ``{token: user_id | {"id": ..., "user_name": ...}}`` from a dict or JSON file."""
    if isinstance(source, str | os.PathLike):
        source = json.loads(Path(source).read_text("utf-8"))
        if not isinstance(source, Mapping):
            raise ValueError("a token file must hold a JSON object")
    tokens = {}
    for token, user in source.items():
        if not isinstance(token, str) or not token.strip():  # no client can present it
            raise ValueError("tokens must be non-empty strings")
        tokens[token] = _to_user(user)
    return tokens


def _bearer(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def presented_tokens(ctx: Context) -> Iterator[str]:
    """Every token the caller presented, in order of precedence."""
    cookie = ctx.cookies.get("token")
    if cookie:
        yield cookie
    header = _bearer(ctx.headers.get("authorization"))
    if header:
        yield header
    params = ctx.connection_params
    if isinstance(params, Mapping):
        for key in ("Authorization", "authorization"):
            token = _bearer(params.get(key))
            if token:
                yield token


class Authenticator:
    """The App's ``authenticate`` hook: returns a :class:`User` or raises AuthError."""

    def __init__(self, tokens: TokenSource | None = None, *, local_user: User = LOCAL_USER) -> None:
        self.local_user = local_user
        loaded = load_tokens(tokens) if tokens is not None else None
        self._by_digest = None if loaded is None else {_digest(t): u for t, u in loaded.items()}

    @property
    def mode(self) -> str:
        """``"local"`` (everyone is the local user) or ``"token"``."""
        return "local" if self._by_digest is None else "token"

    def users(self) -> list[User]:
        """Everyone who can be authenticated."""
        if self._by_digest is None:
            return [self.local_user]
        return list({user.id: user for user in self._by_digest.values()}.values())

    def identify(self, ctx: Context) -> User:
        if self._by_digest is None:
            return self.local_user
        tried = False
        for token in presented_tokens(ctx):
            tried = True
            # Look up by digest so the comparison time does not depend on
            # how much of a guessed token matches a real one.
            user = self._by_digest.get(_digest(token))
            if user is not None:
                return user
        raise AuthError("invalid token" if tried else "missing token")

    async def __call__(self, ctx: Context) -> User:
        return self.identify(ctx)


def current_user(ctx: Any) -> User:
    """The authenticated user of a resolver's or streamer's context."""
    user = getattr(ctx, "auth", None)
    if not isinstance(user, User):
        raise AuthError("not authenticated")
    return user
