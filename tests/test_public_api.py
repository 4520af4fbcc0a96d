"""The public API is exactly what ``iamscope.__all__`` lists, and each name resolves."""

from __future__ import annotations

import importlib

import iamscope
import iamscope.errors
import iamscope.policy
import iamscope.testing
import iamscope.tokens

EXPECTED = {
    "PRESETS",
    "Access",
    "CompiledPolicy",
    "PolicyStore",
    "RowPlan",
    "TraceScope",
    "load_policy",
    "AccessDenied",
    "AsyncTokenVerifier",
    "ClaimMap",
    "Config",
    "ConfigError",
    "IAMScopeError",
    "IssuerConfig",
    "KeyPolicy",
    "KeysUnavailable",
    "Principal",
    "RefreshResult",
    "RequestInvalid",
    "Source",
    "TokenError",
    "TokenVerifier",
    "Verifier",
    "__version__",
    "errors",
    "extract_from_environ",
    "extract_from_headers",
    "issuers_from_config",
    "load_config",
    "Decision",
    "IAMScope",
    "IAMScopeMiddleware",
    "IAMScopeWSGIMiddleware",
    "Requirement",
    "current",
    "require",
    # What the README imports from their own homes, also at the top (issue 12).
    "configure",
    "OwnershipSpanProcessor",
    "to_sql",
}


def test_top_level_all_is_exactly_the_public_api() -> None:
    assert set(iamscope.__all__) == EXPECTED
    assert len(iamscope.__all__) == len(set(iamscope.__all__))


def test_every_listed_name_exists() -> None:
    for module in (iamscope, iamscope.tokens, iamscope.errors, iamscope.testing, iamscope.policy):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_no_public_name_is_left_out_of_all() -> None:
    public = {
        name
        for name, value in vars(iamscope).items()
        if not name.startswith("_")
        and not (type(value).__name__ == "module" and name not in iamscope.__all__)
    }
    assert public <= set(iamscope.__all__)


def test_plugin_module_imports() -> None:
    assert importlib.import_module("iamscope.testing.plugin").local_issuer
