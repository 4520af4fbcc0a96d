"""The command line: lint, explain, test — outputs and distinct exit codes."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from iamscope.cli import main
from iamscope.testing import LocalIssuer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policy"
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


@pytest.mark.parametrize(
    ("claims_yaml", "code", "where"),
    [
        pytest.param("", "claim_not_list", "hints", id="strict-refusal"),
        pytest.param(", claims: {allow_string: true}", "", "hints", id="one-odd-group"),
        pytest.param(", claims: {delimiter: ','}", "", None, id="split"),
    ],
)
def test_explain_token_points_at_delimiter_when_a_groups_string_holds_commas(
    tmp_path: Path, local_issuer: LocalIssuer, claims_yaml: str, code: str, where: str | None
) -> None:
    config = tmp_path / "iamscope.yaml"
    config.write_text(
        "issuers:\n"
        f"  - {{name: corp, issuer: '{local_issuer.url}', audience: api://local, preset: okta"
        f"{claims_yaml}}}\n"
        "policy:\n"
        "  version: '1'\n"
        "  roles: {viewer: {permissions: ['x:read']}}\n"
        "  bindings: [{groups: [sales-east], roles: [viewer]}]\n"
    )
    token = local_issuer.mint(groups="sales-east,analysts")
    exit_code, text = run("explain", "--config", str(config), "--token", token)
    report = json.loads(text)
    assert exit_code == (1 if code else 0)
    assert report.get("code", "") == code
    if where is None:
        assert "hints" not in report and report["roles"] == ["viewer"]
    else:
        (hint,) = report[where]
        assert "claims.delimiter" in hint and "'groups'" in hint
        assert "sales-east" not in hint  # names the claim, never its value
    assert "claims.delimiter" in report.get("detail", "claims.delimiter")


def test_explain_claims_points_at_delimiter_too() -> None:
    claims = json.dumps({"iss": OKTA, "sub": "00u1", "groups": "sales-east,analysts"})
    code, text = run("explain", "--config", str(CONFIG), "--claims", claims)
    refusal = json.loads(text)
    assert code == 1 and refusal["code"] == "claim_not_list"
    assert "claims.allow_string" in refusal["detail"] and "claims.delimiter" in refusal["hints"][0]


def test_cli_errors_name_the_file_or_the_argument(tmp_path: Path) -> None:
    issuer = "issuers:\n  - name: corp\n    issuer: https://corp.example\n    audience: api\n"
    config = tmp_path / "iamscope.yaml"
    config.write_text(issuer + 'policy: {version: "1", roles: {r: {}}}\n')
    suite = tmp_path / "tests.yaml"
    suite.write_text("config: iamscope.yaml\ntests:\n  - {name: a, claims: {}, extra: 1}\n")

    def error(*argv: str) -> str:
        code, out = run(*argv)
        assert code != 0
        return out

    assert error("explain", "--config", str(config), "--claims", "{").startswith(
        "error: --claims: not JSON"
    )
    assert error("explain", "--config", str(config), "--issuer", "x", "--claims", "{}") == (
        f"error: {config}: no configured issuer named 'x'\n"
    )
    assert error("test", str(suite)).startswith(f"error: {suite}:3: each test takes only")
    config.write_text(issuer + 'policy: {version: "1", roles: [1]}\n')
    for argv in (["lint", str(config)], ["explain", "--config", str(config), "--claims", "{}"]):
        assert error(*argv).startswith(f"error: {config}:5: roles must be a mapping")
