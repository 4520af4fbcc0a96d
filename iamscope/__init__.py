"""iamscope: who is this, what may they see, who owns this work.

The public API is exactly ``__all__`` (guarded by ``tests/test_public_api.py``). The
test helpers stay in :mod:`iamscope.testing` (``LocalIssuer``), so importing iamscope
never starts or imports a test issuer.

Where things happen, one folder per step of the pipeline (DESIGN.md, "Layout"):
``tokens/`` checks a token (``verify.py``), ``policy/`` turns roles into row filters
and trace scopes (``resolve.py``; ``render/`` renders them for each store), ``engine/``
decides and caches, ``web/`` answers HTTP, ``telemetry/`` gives spans their owner
(``spans.py``) and writes the audit.
"""

from iamscope import errors
from iamscope.config import Config, load_config
from iamscope.engine.decision import Decision, current
from iamscope.engine.engine import IAMScope
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
    to_sql,
)
from iamscope.telemetry import OwnershipSpanProcessor, configure
from iamscope.tokens import (
    PRESETS,
    AsyncTokenVerifier,
    ClaimMap,
    IssuerConfig,
    KeyPolicy,
    Principal,
    RefreshResult,
    Source,
    TokenVerifier,
    Verifier,
    extract_from_environ,
    extract_from_headers,
    issuers_from_config,
)
from iamscope.web.asgi import IAMScopeMiddleware
from iamscope.web.decorators import Requirement, require
from iamscope.web.wsgi import IAMScopeWSGIMiddleware

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
    "OwnershipSpanProcessor",
    "PolicyStore",
    "Principal",
    "RefreshResult",
    "RequestInvalid",
    "Requirement",
    "RowPlan",
    "Source",
    "TokenError",
    "TokenVerifier",
    "TraceScope",
    "Verifier",
    "__version__",
    "configure",
    "current",
    "errors",
    "extract_from_environ",
    "extract_from_headers",
    "issuers_from_config",
    "load_config",
    "load_policy",
    "require",
    "to_sql",
]
