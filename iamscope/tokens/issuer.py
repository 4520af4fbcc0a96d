"""A trusted issuer's settings (contract 2), built from code or from a config mapping."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from iamscope._yaml import did_you_mean, item_line, reject_unknown, shown
from iamscope.errors import ConfigError
from iamscope.tokens.claims import ClaimMap
from iamscope.tokens.extract import Source
from iamscope.tokens.jose import DEFAULT_MAX_TOKEN_BYTES
from iamscope.tokens.key_policy import KEY_POLICY_KEYS, KeyPolicy
from iamscope.tokens.providers import PRESETS, Preset

__all__ = ["ASYMMETRIC_ALGORITHMS", "IssuerConfig", "issuers_from_config"]

#: Every algorithm iamscope verifies. HMAC is absent on purpose: a JWKS issuer publishes
#: public keys, and accepting HS* with a public key as the secret is the classic
#: algorithm-confusion attack (RFC 8725 §2.1).
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
MAX_LEEWAY = 60.0

_KEYS = (
    "name",
    "issuer",
    "audience",
    "jwks_uri",
    "keys_url",
    "preset",
    "claims",
    "algorithms",
    "token_types",
    "max_lifetime",
    "leeway",
    "source",
    "max_token_bytes",
    "required_claims",
    "client_id",
    "namespace",
    "token_use",
    "signers",
    "hosted_domains",
    "owners",
    "keys",
)
_CLAIM_KEYS = ("subject", "groups", "roles", "scopes", "attributes", "delimiter", "allow_string")


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    """One trusted issuer. Matching on ``issuer`` is exact: never a prefix, never a guess."""

    name: str
    issuer: str
    audience: tuple[str, ...] = ()
    preset: Preset = PRESETS["generic"]
    claims: ClaimMap | None = None  # None: the preset's layout
    jwks_uri: str | None = None  # None: OIDC discovery from `issuer`
    keys_url: str | None = None  # per-kid PEM endpoint with "{kid}" (AWS ALB)
    algorithms: tuple[str, ...] | None = None  # None: the preset's, else all asymmetric
    token_types: tuple[str, ...] = ()
    max_lifetime: float | None = None
    leeway: float = 0.0
    source: Source | None = None  # None: the preset's
    max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES
    required_claims: tuple[str, ...] = ()
    client_id: str | None = None
    namespace: str | None = None
    token_use: tuple[str, ...] = ("access",)
    signers: tuple[str, ...] = ()
    hosted_domains: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()
    keys: KeyPolicy | None = None  # None: the verifier's default (contract 9)
    audience_set: frozenset[str] = field(init=False, repr=False)
    claim_map: ClaimMap = field(init=False, repr=False)
    allowed_algorithms: frozenset[str] = field(init=False, repr=False)
    token_source: Source = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _validate(self)
        algorithms = self.algorithms or self.preset.algorithms or ASYMMETRIC_ALGORITHMS
        object.__setattr__(self, "audience_set", frozenset(self.audience))
        object.__setattr__(self, "allowed_algorithms", frozenset(algorithms))
        object.__setattr__(self, "claim_map", _fill(self.claims or self.preset.claims, self))
        object.__setattr__(self, "token_source", self.source or self.preset.source)
        object.__setattr__(self, "token_types", tuple(media_type(t) for t in self.token_types))

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str | None = None) -> IssuerConfig:
        """Build from a config-file mapping, with precise errors for unknown keys."""
        reject_unknown(data, _KEYS, where, "issuer")
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k not in _SPECIAL}
        for key in (
            "audience",
            "algorithms",
            "token_types",
            "required_claims",
            "token_use",
            "signers",
            "hosted_domains",
            "owners",
        ):
            if key in kwargs:
                kwargs[key] = _strings(kwargs[key], key, where)
        for key in ("name", "issuer", "jwks_uri", "keys_url", "client_id", "namespace"):
            if key in kwargs and not isinstance(kwargs[key], str):
                raise ConfigError(f"{key!r} must be a string", source=where, key=key)
        for key in ("leeway", "max_lifetime", "max_token_bytes"):
            value = kwargs.get(key)
            if key in kwargs and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ConfigError(f"{key!r} must be a number", source=where, key=key)
        if "preset" in data:
            preset = data["preset"]
            if not isinstance(preset, str) or preset not in PRESETS:
                hint = did_you_mean(preset, PRESETS) if isinstance(preset, str) else ""
                raise ConfigError(
                    f"unknown preset {shown(preset)}{hint}", source=where, key="preset"
                )
            kwargs["preset"] = PRESETS[preset]
        if "claims" in data:
            base = kwargs.get("preset", PRESETS["generic"]).claims
            kwargs["claims"] = _claim_overrides(base, data["claims"], where)
        if "source" in data:
            kwargs["source"] = _source(data["source"], where)
        if "keys" in data:
            kwargs["keys"] = _key_policy(data["keys"], where)
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"invalid issuer settings: {exc}", source=where) from exc


_SPECIAL = ("preset", "claims", "source", "keys")


def _validate(cfg: IssuerConfig) -> None:
    where = f"issuer {cfg.name!r}"
    if not cfg.name:
        raise ConfigError("an issuer needs a name")
    if not _acceptable_issuer(cfg):
        raise ConfigError(
            f"{where}: 'issuer' must be an http(s) URL (or, with 'jwks_uri' or 'keys_url' "
            "set, a plain identifier such as Pomerium's host-only issuer)",
            key="issuer",
        )
    if cfg.preset.audience_required and not cfg.audience:
        raise ConfigError(f"{where}: 'audience' is required", key="audience")
    for url_key in ("jwks_uri", "keys_url"):
        url = getattr(cfg, url_key)
        if url is not None and _scheme(url) not in ("https", "http"):
            raise ConfigError(f"{where}: {url_key!r} must be an http(s) URL", key=url_key)
    if cfg.preset.pem_keys and cfg.keys_url is None:
        raise ConfigError(f"{where}: preset {cfg.preset.name!r} needs 'keys_url'", key="keys_url")
    if cfg.keys_url is not None and "{kid}" not in cfg.keys_url:
        raise ConfigError(f"{where}: 'keys_url' must contain '{{kid}}'", key="keys_url")
    for needed in cfg.preset.requires:
        if not getattr(cfg, needed):
            raise ConfigError(f"{where}: preset {cfg.preset.name!r} needs {needed!r}", key=needed)
    if cfg.preset.owners is not None and not cfg.preset.owners(cfg):
        raise ConfigError(
            f"{where}: preset {cfg.preset.name!r} needs 'owners' (the organisations or "
            "namespaces whose pipelines may sign in; any CI job can choose our audience)",
            key="owners",
        )
    if cfg.issuer.startswith("https:") and any(
        url is not None and url.startswith("http:") for url in (cfg.jwks_uri, cfg.keys_url)
    ):
        raise ConfigError(f"{where}: keys of an https issuer must come over https", key="jwks_uri")
    if cfg.algorithms is not None and not cfg.algorithms:
        raise ConfigError(f"{where}: 'algorithms' must not be empty", key="algorithms")
    if not 0 <= cfg.leeway <= MAX_LEEWAY:  # NaN fails this too
        raise ConfigError(f"{where}: 'leeway' must be between 0 and 60 seconds", key="leeway")
    if cfg.max_lifetime is not None and not (0 < cfg.max_lifetime < math.inf):
        raise ConfigError(f"{where}: 'max_lifetime' must be positive", key="max_lifetime")
    if not 0 < cfg.max_token_bytes <= 1024 * 1024:
        raise ConfigError(f"{where}: 'max_token_bytes' is out of range", key="max_token_bytes")
    bad = [a for a in (cfg.algorithms or ()) if a not in ASYMMETRIC_ALGORITHMS]
    if bad:
        raise ConfigError(
            f"{where}: algorithms {bad} are not accepted (never 'none', never HMAC for a "
            f"JWKS issuer); choose from {list(ASYMMETRIC_ALGORITHMS)}",
            key="algorithms",
        )


def media_type(typ: str) -> str:
    """RFC 7515 §4.1.9: "application/" may be omitted; media types compare case-insensitively."""
    typ = typ.lower()
    return typ[len("application/") :] if typ.startswith("application/") else typ


def _scheme(url: str) -> str | None:
    """The URL's scheme, or None when it is no URL at all (``https://[::1``)."""
    try:
        return urlsplit(url).scheme
    except ValueError:
        return None


def _acceptable_issuer(cfg: IssuerConfig) -> bool:
    scheme = _scheme(cfg.issuer)
    if scheme in ("https", "http"):
        return True
    if scheme is None:
        return False  # a broken URL is not a plain identifier either
    # Discovery needs a URL; with explicit keys the issuer is only compared, exactly.
    explicit_keys = cfg.jwks_uri is not None or cfg.keys_url is not None
    return explicit_keys and bool(cfg.issuer) and not any(c.isspace() for c in cfg.issuer)


def _fill(claims: ClaimMap, cfg: IssuerConfig) -> ClaimMap:
    """Resolve ``{client_id}`` / ``{namespace}`` in paths; drop paths whose value is unset."""
    values = {"client_id": cfg.client_id, "namespace": cfg.namespace}

    def fill(paths: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for path in paths:
            if "{" not in path:
                out.append(path)
                continue
            needed = [k for k in values if "{" + k + "}" in path]
            if all(values[k] for k in needed):
                out.append(path.format(**values))
        return tuple(out)

    return ClaimMap(
        subject=fill(claims.subject),
        groups=fill(claims.groups),
        roles=fill(claims.roles),
        scopes=fill(claims.scopes),
        attributes={name: fill(paths) for name, paths in claims.attributes.items()},
        delimiter=claims.delimiter,
        allow_string=claims.allow_string,
    )


def _strings(value: Any, key: str, where: str | None) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{key!r} must be a string or a list of strings", source=where, key=key)


def _claim_overrides(base: ClaimMap, data: Any, where: str | None) -> ClaimMap:
    reject_unknown(data, _CLAIM_KEYS, where, "claims")
    fields: dict[str, Any] = {
        "subject": base.subject,
        "groups": base.groups,
        "roles": base.roles,
        "scopes": base.scopes,
        "attributes": dict(base.attributes),
        "delimiter": base.delimiter,
        "allow_string": base.allow_string,
    }
    for key in ("subject", "groups", "roles", "scopes"):
        if key in data:
            fields[key] = _strings(data[key], f"claims.{key}", where) if data[key] else ()
    if "attributes" in data:
        attrs = data["attributes"]
        if not isinstance(attrs, Mapping):
            raise ConfigError("'claims.attributes' must be a mapping", source=where, key="claims")
        for name, paths in attrs.items():
            fields["attributes"][name] = _strings(paths, f"claims.attributes.{name}", where)
    if "delimiter" in data:
        delimiter = data["delimiter"]
        if not isinstance(delimiter, str) or not delimiter:
            raise ConfigError(
                "'claims.delimiter' must be a non-empty string", source=where, key="claims"
            )
        fields["delimiter"] = delimiter
    if "allow_string" in data:
        if not isinstance(data["allow_string"], bool):
            raise ConfigError("'claims.allow_string' must be true or false", source=where)
        fields["allow_string"] = data["allow_string"]
    return ClaimMap(**fields)


def _key_policy(data: Any, where: str | None) -> KeyPolicy:
    """An issuer's ``keys:`` block: every value checked, each error at its own line."""
    reject_unknown(data, KEY_POLICY_KEYS, where, "keys")
    lines = getattr(data, "lines", {})
    try:
        return KeyPolicy(**data)
    except ConfigError as exc:
        raise ConfigError(
            exc.detail,
            source=where,
            line=lines.get(exc.key) or getattr(data, "line", None),
            key=exc.key,
        ) from None


def _source(data: Any, where: str | None) -> Source:
    # "bearer", {"cookie": "name"} or {"header": "x-forwarded-assertion"}
    if data == "bearer":
        return Source.bearer()
    if isinstance(data, Mapping) and len(data) == 1:
        ((kind, name),) = data.items()
        if kind == "cookie" and isinstance(name, str) and name:
            return Source.cookie(name)
        if kind == "header" and isinstance(name, str) and name:
            return Source.header(name)
    raise ConfigError(
        "'source' must be 'bearer', {cookie: NAME} or {header: NAME}", source=where, key="source"
    )


def issuers_from_config(data: Any, *, where: str | None = None) -> tuple[IssuerConfig, ...]:
    """The ``issuers`` list of a config file; names and issuer URLs must be unique."""
    if not isinstance(data, list) or not data:
        raise ConfigError("'issuers' must be a non-empty list", source=where, key="issuers")
    issuers = tuple(_issuer_at(item, where, item_line(data, i)) for i, item in enumerate(data))
    for attr in ("name", "issuer"):
        seen: set[str] = set()
        for cfg in issuers:
            value = getattr(cfg, attr)
            if value in seen:
                raise ConfigError(f"two issuers share the {attr} {value!r}", source=where)
            seen.add(value)
    return issuers


def _issuer_at(item: Any, where: str | None, line: int | None) -> IssuerConfig:
    try:
        return IssuerConfig.from_mapping(item, where=where)
    except ConfigError as exc:
        if exc.line is not None or line is None:
            raise
        # Point at the offending key of this entry, or at the entry itself.
        lines = getattr(item, "lines", {})
        at = lines.get(exc.key) if exc.key else None
        raise ConfigError(exc.detail, source=where, line=at or line, key=exc.key) from None
