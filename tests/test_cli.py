"""The command line: lint, explain, test — outputs and distinct exit codes."""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from iamscope.cli import main
from iamscope.cli import token as token_command
from iamscope.testing import LocalIssuer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "policy"
CONFIG = EXAMPLES / "iamscope.yaml"
TESTS = EXAMPLES / "policy_tests.yaml"
OKTA = "https://acme.okta.com/oauth2/default"


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out)
    return code, out.getvalue()


def test_lint_reference_config_is_clean() -> None:
    code, text = run("lint", str(CONFIG))
    assert code == 0
    assert "3 roles, 4 bindings, 2 issuers, 0 warnings" in text


def test_lint_errors_exit_1_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        CONFIG.read_text().replace(
            "roles: [analyst], attributes: {region: [east]}",
            "roles: [analist], attributes: {region: [east]}",
        )
    )
    code, text = run("lint", str(bad))
    assert code == 1
    assert f"{bad}:" in text and "did you mean 'analyst'" in text


def test_lint_warnings_fail_only_when_strict(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text('version: "1"\nroles: {unused: {}}\nbindings: []\n')
    assert run("lint", str(path))[0] == 0
    code, text = run("lint", "--strict", str(path))
    assert code == 1 and "role 'unused' is never bound" in text


def test_explain_claims_prints_roles_rows_sql_traces_owner_and_why() -> None:
    claims = json.dumps({"iss": OKTA, "sub": "00u1", "groups": ["sales-east"]})
    code, text = run("explain", "--config", str(CONFIG), "--claims", claims)
    assert code == 0
    report = json.loads(text)
    assert report["roles"] == ["analyst"]
    assert report["rows_sql"]["sales"] == {
        "where": '"region" IN (:iamscope_0)',
        "params": {"iamscope_0": "east"},
    }
    assert report["owner"] == "sales"
    assert report["bindings"] == ["bindings[0]"]
    verdicts = {v["binding"]: v["why"] for v in report["binding_verdicts"]}
    assert "sales-west" in verdicts["bindings[1]"]


def test_explain_refused_claims_exit_1() -> None:
    claims = json.dumps(
        {
            "iss": "https://token.actions.githubusercontent.com",
            "sub": "repo:evil/x",
            "repository_owner": "evil",
        }
    )
    code, text = run("explain", "--config", str(CONFIG), "--claims", claims)
    assert code == 1 and json.loads(text)["code"] == "claim_invalid"


def test_explain_needs_usable_input() -> None:
    assert run("explain", "--config", str(CONFIG), "--claims", "{not json")[0] == 2
    assert run("explain", "--config", "/nonexistent.yaml", "--claims", "{}")[0] == 2


def test_policy_tests_pass(tmp_path: Path) -> None:
    code, text = run("test", str(TESTS))
    assert code == 0, text
    assert "5 passed, 0 failed" in text


def test_failing_policy_test_exits_1(tmp_path: Path) -> None:
    shutil.copy(CONFIG, tmp_path / "iamscope.yaml")
    tests = tmp_path / "t.yaml"
    tests.write_text(
        TESTS.read_text().replace("rows: {sales: \"region IN ('east')\"}", "rows: {sales: all}")
    )
    code, text = run("test", str(tests))
    assert code == 1
    assert "FAIL an east analyst" in text and "expected 'all'" in text


def test_unusable_test_file_exits_2(tmp_path: Path) -> None:
    tests = tmp_path / "t.yaml"
    tests.write_text("config: missing.yaml\ntests: []\n")
    assert run("test", str(tests))[0] == 2
    tests.write_text("tests: {}\n")
    assert run("test", str(tests))[0] == 2
    shutil.copy(CONFIG, tmp_path / "iamscope.yaml")
    tests.write_text("config: iamscope.yaml\ntests:\n  - {name: x, expcet: {}}\n")
    assert run("test", str(tests))[0] == 2


def test_explain_token_verifies_it_against_the_configured_issuer(
    tmp_path: Path, local_issuer: LocalIssuer
) -> None:
    config = tmp_path / "iamscope.yaml"
    config.write_text(
        "issuers:\n"
        f"  - {{name: corp, issuer: '{local_issuer.url}', audience: api://local, preset: okta}}\n"
        "policy:\n"
        "  version: '1'\n"
        "  roles: {viewer: {permissions: ['x:read']}}\n"
        "  bindings: [{groups: [staff], roles: [viewer]}]\n"
    )
    code, text = run(
        "explain", "--config", str(config), "--token", local_issuer.mint(groups=["staff"])
    )
    assert code == 0
    report = json.loads(text)
    assert report["roles"] == ["viewer"] and report["principal"]["issuer"] == "corp"
    forged = local_issuer.mint(groups=["staff"])[:-4] + "AAAA"
    code, text = run("explain", "--config", str(config), "--token", forged)
    assert code == 1 and json.loads(text)["code"] == "signature_invalid"


# --- token ---------------------------------------------------------------------------


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
