"""``iamscope token``: development tokens from a throwaway local issuer, served or not."""

from __future__ import annotations

import base64
import io
import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from iamscope.cli import main
from iamscope.cli import token as token_command
from iamscope.testing import LocalIssuer
from tests.cli.test_policy import run


def segment(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def test_token_prints_a_token_with_the_asked_claims(capsys: pytest.CaptureFixture[str]) -> None:
    buf = io.StringIO()
    before = int(time.time())
    assert main(["token", "--sub", "alice", "--groups", "sales-east"], out=buf) == 0
    after = int(time.time())
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1  # only the token on stdout: TOKEN=$(iamscope token ...) works
    (token,) = lines
    assert segment(token, 0)["alg"] == "RS256"
    payload = segment(token, 1)
    assert payload["sub"] == "alice"
    assert payload["groups"] == ["sales-east"]
    assert before + 3600 <= payload["exp"] <= after + 3600
    assert payload["iss"].startswith("http://127.0.0.1:")
    note = capsys.readouterr().err
    assert "--serve" in note and "verifies against nothing" in note


def test_token_claims_and_ttl() -> None:
    buf = io.StringIO()
    argv = [
        "token",
        "--claim",
        'region=["east", "west"]',
        "--claim",
        "tier=gold",
        "--claim",
        "aud=api://analytics",
        "--ttl",
        "60",
    ]
    assert main(argv, out=buf) == 0
    payload = segment(buf.getvalue().strip(), 1)
    assert payload["region"] == ["east", "west"]  # JSON when it parses
    assert payload["tier"] == "gold"  # else a string
    assert payload["aud"] == "api://analytics"
    assert payload["exp"] - payload["iat"] == 60
    assert "groups" not in payload and payload["sub"] == "dev-user"


def test_token_refuses_unusable_arguments() -> None:
    assert run("token", "--ttl", "0")[0] == 2
    code, text = run("token", "--claim", "no-equals-sign")
    assert code == 2 and "NAME=VALUE" in text
    code, text = run("token", "--issuer-port", "5000")
    assert code == 2 and "--serve" in text


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_token_serve_keeps_a_verifying_issuer_until_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    buf = io.StringIO()
    seen: dict[str, Any] = {}

    def interrupted() -> None:
        # While "serving": configure the printed snippet and verify the printed token.
        token, *rest = buf.getvalue().splitlines()
        text = "\n".join(rest)
        snippet = text[text.index("issuers:") :].split("\n\n")[0]
        config = tmp_path / "iamscope.yaml"
        config.write_text(
            snippet + "\npolicy:\n  version: '1'\n"
            "  roles: {viewer: {permissions: ['x:read']}}\n"
            "  bindings: [{groups: [staff], roles: [viewer]}]\n"
        )
        seen["code"], seen["report"] = run("explain", "--config", str(config), "--token", token)
        seen["text"] = text
        raise KeyboardInterrupt

    monkeypatch.setattr(token_command, "_wait_for_interrupt", interrupted)
    argv = ["token", "--serve", "--issuer-port", str(port), "--sub", "bob", "--groups", "staff"]
    assert main(argv, out=buf) == 0
    assert seen["code"] == 0, seen["report"]
    report = json.loads(seen["report"])
    assert report["roles"] == ["viewer"] and report["principal"]["issuer"] == "local"
    assert f"issuer:   http://127.0.0.1:{port}\n" in seen["text"]
    assert f"jwks_uri: http://127.0.0.1:{port}/jwks.json" in seen["text"]
    assert buf.getvalue().endswith("stopped\n")
    with pytest.raises(httpx.ConnectError):  # the issuer stopped with the command
        httpx.get(f"http://127.0.0.1:{port}/jwks.json", timeout=2)


def test_token_serve_on_a_busy_port_is_unusable(local_issuer: LocalIssuer) -> None:
    code, text = run("token", "--serve", "--issuer-port", str(local_issuer.port))
    assert code == 2 and "cannot listen" in text
