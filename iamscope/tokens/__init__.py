"""Who is this: token extraction, strict JWS verification, keys and provider presets."""

from iamscope.tokens.claims import ClaimMap
from iamscope.tokens.extract import Source, extract_from_environ, extract_from_headers
from iamscope.tokens.issuer import IssuerConfig, issuers_from_config
from iamscope.tokens.keys import KeyPolicy, RefreshResult
from iamscope.tokens.principal import Principal, PrincipalKind
from iamscope.tokens.providers import PRESETS, Preset
from iamscope.tokens.verifier import AsyncTokenVerifier, TokenVerifier
from iamscope.tokens.verify import Verifier

__all__ = [
    "PRESETS",
    "AsyncTokenVerifier",
    "ClaimMap",
    "IssuerConfig",
    "KeyPolicy",
    "Preset",
    "Principal",
    "PrincipalKind",
    "RefreshResult",
    "Source",
    "TokenVerifier",
    "Verifier",
    "extract_from_environ",
    "extract_from_headers",
    "issuers_from_config",
]
