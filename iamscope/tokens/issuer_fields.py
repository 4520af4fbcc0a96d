"""What a provider preset's hooks may read of an issuer's settings.

:class:`~iamscope.tokens.issuer.IssuerConfig` holds a
:class:`~iamscope.tokens.providers.Preset`, and a preset's checks are handed the issuer
they check for. Typing those checks against this protocol rather than ``IssuerConfig``
keeps the dependency one way: ``issuer`` → ``providers`` → here.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["IssuerFields"]


class IssuerFields(Protocol):
    """The issuer settings presets read (``IssuerConfig`` has them all)."""

    @property
    def name(self) -> str: ...
    @property
    def issuer(self) -> str: ...
    @property
    def audience(self) -> tuple[str, ...]: ...
    @property
    def audience_set(self) -> frozenset[str]: ...
    @property
    def client_id(self) -> str | None: ...
    @property
    def namespace(self) -> str | None: ...
    @property
    def token_use(self) -> tuple[str, ...]: ...
    @property
    def signers(self) -> tuple[str, ...]: ...
    @property
    def hosted_domains(self) -> tuple[str, ...]: ...
    @property
    def owners(self) -> tuple[str, ...]: ...
