"""The authenticate hook: local mode, and each place a token can come from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from meshsub_trio import AuthError, Context
from meshsub_trio.meshery import LOCAL_USER, LOCAL_USER_ID, Authenticator, User, create_app

TOKENS = {"alice-token": "alice-id", "bob-token": {"id": "bob-id", "user_name": "bob"}}


def ctx(**kw: Any) -> Context:
    return Context(**kw)


async def test_local_mode_everyone_is_the_local_user() -> None:
    auth = Authenticator()
    assert auth.mode == "local"
    assert await auth(ctx()) == LOCAL_USER
    # Tokens are ignored, not rejected, in local mode (as Meshery's local provider).
    assert await auth(ctx(headers={"authorization": "Bearer whatever"})) == LOCAL_USER
    assert LOCAL_USER.id == LOCAL_USER_ID


async def test_local_user_can_be_chosen() -> None:
    app = create_app(simulator=False, local_user="me-123")
    user = await app.authenticate(ctx())
    assert user.id == "me-123" and app.auth_mode == "local"
    assert "me-123" in app.model.users


@pytest.mark.parametrize(
    ("context", "user_id"),
    [
        (ctx(cookies={"token": "alice-token", "meshery-provider": "Meshery"}), "alice-id"),
        (ctx(cookies={"token": "bob-token"}), "bob-id"),
        (ctx(headers={"authorization": "Bearer alice-token"}), "alice-id"),
        (ctx(headers={"authorization": "bearer   bob-token "}), "bob-id"),
        (ctx(connection_params={"Authorization": "Bearer alice-token"}), "alice-id"),
        (ctx(connection_params={"authorization": "Bearer bob-token"}), "bob-id"),
        # A stale cookie does not hide a valid token presented another way.
        (
            ctx(
                cookies={"token": "expired"},
                connection_params={"Authorization": "Bearer bob-token"},
            ),
            "bob-id",
        ),
    ],
)
async def test_token_sources(context: Context, user_id: str) -> None:
    auth = Authenticator(TOKENS)
    assert auth.mode == "token"
    assert (await auth(context)).id == user_id


@pytest.mark.parametrize(
    ("context", "message"),
    [
        (ctx(), "missing token"),
        (ctx(cookies={"meshery-provider": "Meshery"}), "missing token"),
        (ctx(headers={"authorization": "Basic YWxpY2U6c2VjcmV0"}), "missing token"),
        (ctx(headers={"authorization": "Bearer"}), "missing token"),
        (ctx(connection_params={"Authorization": "alice-token"}), "missing token"),
        (ctx(connection_params={"token": "alice-token"}), "missing token"),
        (ctx(cookies={"token": "nope"}), "invalid token"),
        (ctx(headers={"authorization": "Bearer alice-token-but-longer"}), "invalid token"),
        (ctx(connection_params={"Authorization": "Bearer ALICE-TOKEN"}), "invalid token"),
    ],
)
async def test_refusals_raise_auth_error(context: Context, message: str) -> None:
    with pytest.raises(AuthError, match=message):
        await Authenticator(TOKENS)(context)


async def test_tokens_from_a_json_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(TOKENS))
    for source in (path, str(path)):
        auth = Authenticator(source)
        user = await auth(ctx(cookies={"token": "bob-token"}))
        assert user == User("bob-id", "bob", "Meshery")
    assert sorted(u.id for u in Authenticator(path).users()) == ["alice-id", "bob-id"]


@pytest.mark.parametrize(
    "content", ['["not", "an", "object"]', '{"t": 5}', '{"": "empty token"}', '{"t": {}}']
)
def test_bad_token_sources_fail_at_startup(tmp_path: Path, content: str) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(content)
    with pytest.raises(ValueError):
        Authenticator(path)


async def test_create_app_in_token_mode_knows_its_users() -> None:
    app = create_app(simulator=False, tokens=TOKENS)
    assert app.auth_mode == "token"
    assert {"alice-id", "bob-id"} <= app.model.users
    assert (await app.authenticate(ctx(cookies={"token": "alice-token"}))).id == "alice-id"
    with pytest.raises(AuthError):
        await app.authenticate(ctx())
