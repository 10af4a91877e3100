"""A ``--tokens`` file the server cannot use is one ``meshsub-trio:`` line and exit 1.

Found from outside: an empty token (``{"": "alice"}``) ended in a 15-line
traceback, an empty user id (``{"tok": ""}``) was served as a nameless user,
and the other token-file errors lacked the prefix every start-up error has.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import trio

from meshsub_trio.meshery import create_app
from meshsub_trio.meshery._auth import load_tokens

CASES = {
    "empty token": ('{"": "alice"}', "tokens must be non-empty strings"),
    "blank token": ('{"  ": "alice"}', "tokens must be non-empty strings"),
    "empty user id": ('{"tok": ""}', "a token maps to an empty user id"),
    "blank user id": ('{"tok": "  "}', "a token maps to an empty user id"),
    "not an object": ('["tok"]', "must hold a JSON object of token -> user id"),
    "not a user id": ('{"tok": 7}', "must hold a JSON object of token -> user id"),
    "not JSON": ('{"tok": ', "is not valid JSON: "),
}


async def serve(*args: str) -> trio.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process(
            [sys.executable, "-m", "meshsub_trio", "serve", "--port", "0", *args],
            capture_stdout=True, capture_stderr=True, check=False,
            env={**os.environ, "MESHSUB_DATA_DIR": ":memory:"},
        )  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mode", [[], ["--log-format", "json"], ["--workers", "2"]])
async def test_a_bad_tokens_file_is_one_line(case: str, mode: list[str], tmp_path: Path) -> None:
    text, why = CASES[case]
    path = tmp_path / "tokens.json"
    path.write_text(text, "utf-8")
    result = await serve("--tokens", str(path), *mode)
    assert result.returncode == 1, result
    assert result.stdout == b""  # nothing served, no worker started
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    if "json" in mode:  # as every other line in that format
        entry = json.loads(lines[0])
        assert entry["level"] == "ERROR", entry
        message = "meshsub-trio: " + entry["message"]
    else:
        message = lines[0]
    assert message.startswith(f"meshsub-trio: --tokens {path}") and why in message, lines
    assert "alice" not in lines[0]  # nothing of the file quoted


async def test_a_missing_tokens_file_is_one_line(tmp_path: Path) -> None:
    result = await serve("--tokens", str(tmp_path / "nope.json"))
    assert result.returncode == 1
    assert result.stderr.decode() == (
        f"meshsub-trio: --tokens {tmp_path / 'nope.json'}: No such file or directory\n"
    )


def test_the_app_refuses_an_empty_user_id_too() -> None:
    """Through the API (``create_app(tokens=...)``) as through the command line."""
    for tokens in ({"tok": ""}, {"tok": {"id": ""}}, {"": "alice"}):
        with pytest.raises(ValueError):
            load_tokens(tokens)
        with pytest.raises(ValueError):
            create_app(tokens=tokens, simulator=False, data_dir=":memory:")
    assert load_tokens({"tok": "alice"})["tok"].id == "alice"
