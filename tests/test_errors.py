"""The exception tree: stable codes, HTTP answers, and the outage/bad-token split."""

from __future__ import annotations

import inspect
import re

import pytest

from iamscope import errors


def all_errors() -> list[type[errors.IAMScopeError]]:
    return [
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, errors.IAMScopeError)
    ]


def test_every_error_is_exported_and_drawn_in_the_docstring() -> None:
    doc = errors.__doc__ or ""
    for cls in all_errors():
        assert cls.__name__ in errors.__all__
        assert re.search(rf"\b{cls.__name__}\b", doc), cls.__name__
        assert cls.code in doc, cls.code


def test_codes_are_unique_snake_case() -> None:
    codes = [cls.code for cls in all_errors()]
    assert len(codes) == len(set(codes))
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", code) for code in codes)


@pytest.mark.parametrize(
    ("cls", "status", "error"),
    [
        (errors.TokenExpired, 401, "invalid_token"),
        (errors.SignatureInvalid, 401, "invalid_token"),
        (errors.IssuerUntrusted, 401, "invalid_token"),
        (errors.GroupsOverage, 401, "invalid_token"),
        (errors.TokenMalformed, 401, "invalid_token"),
        (errors.ClaimTypeInvalid, 401, "invalid_token"),
        (errors.ClaimNotList, 401, "invalid_token"),
        (errors.TokenTypeInvalid, 401, "invalid_token"),
        (errors.TokenMissing, 401, ""),
        (errors.RequestInvalid, 400, "invalid_request"),
        (errors.AccessDenied, 403, "insufficient_scope"),
        (errors.KeysUnavailable, 503, ""),
    ],
)
def test_http_answers(cls: type[errors.IAMScopeError], status: int, error: str) -> None:
    assert (cls.status, cls.error) == (status, error)


def test_an_outage_is_never_a_token_error() -> None:
    assert not issubclass(errors.KeysUnavailable, errors.TokenError)


def test_claim_errors_carry_the_claim_name() -> None:
    exc = errors.TokenExpired("token has expired", claim="exp", issuer="corp")
    assert (exc.claim, exc.issuer, exc.code) == ("exp", "corp", "token_expired")


def test_config_error_names_file_and_line() -> None:
    exc = errors.ConfigError("unknown key 'x'", source="cfg.yaml", line=7, key="x")
    assert str(exc) == "cfg.yaml:7: unknown key 'x'"
    assert (exc.detail, exc.key) == ("unknown key 'x'", "x")


def test_readme_lists_every_code_under_its_http_answer() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = {
        line.split("|")[1].strip(): set(re.findall(r"`([a-z_]+)`", line.split("|")[2]))
        for line in readme.splitlines()
        if re.match(r"\| (401|400|403|503)\b", line)
    }
    by_status = {401: "401 `invalid_token`", 400: "400 `invalid_request`"}
    by_status |= {403: "403 `insufficient_scope`", 503: "503"}
    for cls in all_errors():
        if cls.status in by_status:
            assert cls.code in rows[by_status[cls.status]], (cls.code, cls.status)
    listed = set().union(*rows.values())
    assert listed <= {cls.code for cls in all_errors()}  # no stale code either
