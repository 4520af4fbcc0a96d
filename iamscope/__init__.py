"""iamscope: who is this, what may they see, who owns this work.

The public API is exactly ``__all__`` (guarded by ``tests/test_public_api.py``).
"""

from iamscope import errors
from iamscope.asgi import IAMScopeMiddleware
from iamscope.config import Config, load_config
from iamscope.decorators import Requirement, require
from iamscope.enforce import Decision, IAMScope, current
from iamscope.errors import (
    AccessDenied,
    ConfigError,
    IAMScopeError,
    KeysUnavailable,
    RequestInvalid,
    TokenError,
)
from iamscope.policy import (
    Access,
    CompiledPolicy,
    PolicyStore,
    RowPlan,
    TraceScope,
    load_policy,
)
from iamscope.tokens import (
    PRESETS,
    AsyncTokenVerifier,
    ClaimMap,
    IssuerConfig,
    KeyPolicy,
    Principal,
    Source,
    TokenVerifier,
    Verifier,
    extract_from_environ,
    extract_from_headers,
    issuers_from_config,
)
from iamscope.wsgi import IAMScopeWSGIMiddleware

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "Access",
    "AccessDenied",
    "AsyncTokenVerifier",
    "ClaimMap",
    "CompiledPolicy",
    "Config",
    "ConfigError",
    "Decision",
    "IAMScope",
    "IAMScopeError",
    "IAMScopeMiddleware",
    "IAMScopeWSGIMiddleware",
    "IssuerConfig",
    "KeyPolicy",
    "KeysUnavailable",
    "PolicyStore",
    "Principal",
    "RequestInvalid",
    "Requirement",
    "RowPlan",
    "Source",
    "TokenError",
    "TokenVerifier",
    "TraceScope",
    "Verifier",
    "__version__",
    "current",
    "errors",
    "extract_from_environ",
    "extract_from_headers",
    "issuers_from_config",
    "load_config",
    "load_policy",
    "require",
]
