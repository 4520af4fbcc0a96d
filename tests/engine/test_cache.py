"""The token cache on its own (engine/cache.py): lifetimes, invalidation, bounds.

The middleware tests (tests/web) show the same rules end to end; these pin them at the
cache, with an injected clock.
"""

from __future__ import annotations

import dataclasses

import pytest

from iamscope import IAMScope
from iamscope.engine.cache import CacheSettings, InMemoryRevocations, TokenCache, digest
from iamscope.errors import ConfigError, SignatureInvalid
from iamscope.policy import PolicyStore
from iamscope.policy.access import Access
from iamscope.policy.traces import TraceScope
from iamscope.telemetry.spans import CachedAttributes
from iamscope.testing import LocalIssuer
from iamscope.tokens.principal import Principal
from tests._policy import POLICY
from tests.conftest import FakeClock

ACCESS = Access(
    roles=frozenset({"analyst"}),
    permissions=frozenset(),
    rows={},
    traces=TraceScope(()),
    owner=None,
    policy_version="1",
)


def principal(clock: FakeClock, *, ttl: float = 600.0, subject: str = "alice") -> Principal:
    return Principal(
        issuer="corp",
        issuer_url="https://idp.example",
        subject=subject,
        kind="user",
        expires_at=clock() + ttl,
        token_id=f"jti-{subject}",
    )


def test_keys_are_digests_never_the_credential() -> None:
    key = digest(b"Bearer secret.token.value")
    assert len(key) == 32 and b"secret" not in key


def test_an_entry_never_outlives_its_token(clock: FakeClock) -> None:
    cache = TokenCache(clock=clock)
    cache.put_allowed(b"k", principal(clock, ttl=30), ACCESS, generation=1)
    clock.advance(29)
    assert cache.get(b"k", 1) is not None
    clock.advance(1)
    assert cache.get(b"k", 1) is None
    assert len(cache) == 0  # dropped on lookup, not left behind


def test_max_ttl_caps_long_lived_tokens(clock: FakeClock) -> None:
    cache = TokenCache(CacheSettings(max_ttl=60), clock=clock)
    cache.put_allowed(b"k", principal(clock, ttl=86_400), ACCESS, generation=1)
    clock.advance(60)
    assert cache.get(b"k", 1) is None


def test_a_policy_reload_retires_every_entry_without_a_scan(clock: FakeClock) -> None:
    cache = TokenCache(clock=clock)
    cache.put_allowed(b"k", principal(clock), ACCESS, generation=1)
    assert cache.get(b"k", 2) is None


def test_revocation_is_seen_on_the_next_lookup(clock: FakeClock) -> None:
    revocations = InMemoryRevocations()
    cache = TokenCache(clock=clock, revocations=revocations)
    cache.put_allowed(b"alice", principal(clock), ACCESS, generation=1)
    cache.put_allowed(b"bob", principal(clock, subject="bob"), ACCESS, generation=1)
    revocations.revoke_subject("corp", "alice")
    assert cache.get(b"alice", 1) is None
    assert cache.get(b"bob", 1) is not None  # re-checked against the new version, kept


def test_a_revocation_landing_before_the_put_is_not_missed(clock: FakeClock) -> None:
    revocations = InMemoryRevocations()
    cache = TokenCache(clock=clock, revocations=revocations)
    checked = revocations.version  # the engine reads this before its own check
    revocations.revoke_token("corp", "jti-alice")
    cache.put_allowed(b"k", principal(clock), ACCESS, 1, revocations_checked=checked)
    assert cache.get(b"k", 1) is None


def test_rejections_are_remembered_briefly(clock: FakeClock) -> None:
    cache = TokenCache(CacheSettings(negative_ttl=5), clock=clock)
    cache.put_rejected(b"bad", SignatureInvalid("bad signature"), generation=1)
    entry = cache.get(b"bad", 1)
    assert entry is not None and isinstance(entry.error, SignatureInvalid)
    clock.advance(5)
    assert cache.get(b"bad", 1) is None


def test_the_cache_is_bounded_oldest_first(clock: FakeClock) -> None:
    cache = TokenCache(CacheSettings(max_entries=2, max_negative=1), clock=clock)
    for key in (b"a", b"b", b"c"):
        cache.put_allowed(key, principal(clock), ACCESS, generation=1)
    assert len(cache) == 2 and cache.get(b"a", 1) is None and cache.get(b"c", 1) is not None
    cache.put_rejected(b"x", SignatureInvalid("no"), 1)
    cache.put_rejected(b"y", SignatureInvalid("no"), 1)
    assert cache.get(b"x", 1) is None and cache.get(b"y", 1) is not None


def test_clear_forgets_allowed_and_rejected(clock: FakeClock) -> None:
    cache = TokenCache(clock=clock)
    cache.put_allowed(b"k", principal(clock), ACCESS, generation=1)
    cache.put_rejected(b"bad", SignatureInvalid("no"), 1)
    cache.clear()
    assert cache.get(b"k", 1) is None and cache.get(b"bad", 1) is None


@pytest.mark.parametrize(
    "block",
    [{"max_entries": 0}, {"max_entries": 1.5}, {"max_ttl": True}, {"negative_ttl": "5"}],
)
def test_settings_must_be_positive_numbers(block: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        CacheSettings.from_mapping(block)


def test_unknown_settings_are_named() -> None:
    with pytest.raises(ConfigError, match=r"max_entires.*did you mean 'max_entries'"):
        CacheSettings.from_mapping({"max_entires": 10})


def test_entries_keep_no_claims_and_share_what_tokens_have_in_common() -> None:
    clock = FakeClock()
    cache = TokenCache(clock=clock)
    entries = []
    for subject in ("alice", "bob"):
        full = Principal(
            issuer="corp",
            # Equal values parsed from two tokens are two objects: the entries share one.
            issuer_url="".join(["https://", "idp.example"]),
            subject=subject,
            kind="user",
            expires_at=clock() + 600,
            groups=frozenset(["sales-east"]),
            attributes={"region": ("east",)},
            claims={"sub": subject, "groups": ["sales-east"], "secret": "x" * 100},
            audience=("api://analytics",),
        )
        attributes = {"iamscope.issuer": "corp", "user.roles": ("analyst",)}
        entries.append(cache.put_allowed(subject.encode(), full, ACCESS, 1, attributes))
    alice, bob = entries  # each entry is the compact principal decisions carry
    assert dict(alice.claims) == {} and dict(bob.claims) == {}
    assert (alice.subject, bob.subject) == ("alice", "bob")
    assert alice.issuer_url is bob.issuer_url and alice.audience is bob.audience
    assert alice.groups is bob.groups and alice.attributes is bob.attributes
    assert dict(alice.attributes) == {"region": ("east",)}
    assert alice.span_attributes is bob.span_attributes  # one span-attribute mapping
    assert cache.get(b"alice", 1) is entries[0]


def test_span_attributes_keep_one_dict_for_what_identities_share() -> None:
    clock = FakeClock()
    cache = TokenCache(clock=clock)
    entries = []
    for subject in ("alice", "bob"):
        attributes = {
            "iamscope.issuer": "corp",
            "user.roles": ("analyst",),
            "user.hash": f"hash-of-{subject}",
            "iamscope.owner.team": "sales",
        }
        entry = cache.put_allowed(
            subject.encode(), principal(clock, subject=subject), ACCESS, 1, attributes
        )
        assert entry.span_attributes == attributes and dict(entry.span_attributes) == attributes
        entries.append(entry.span_attributes)
    alice, bob = entries
    assert isinstance(alice, CachedAttributes) and isinstance(bob, CachedAttributes)
    assert alice.shared is bob.shared and "user.hash" not in alice.shared
    assert (alice["user.hash"], bob.get("user.hash")) == ("hash-of-alice", "hash-of-bob")
    assert len(alice) == 4 and "iamscope.owner.team" in alice and "enduser.id" not in alice
    assert alice.get("enduser.id") is None


def test_span_attributes_with_two_values_of_their_own_stay_whole() -> None:
    # enduser.id (opt-in) beside user.hash: an identity's own dict, equal all the same.
    clock = FakeClock()
    cache = TokenCache(clock=clock)
    attributes = {"iamscope.issuer": "corp", "user.hash": "h", "enduser.id": "alice"}
    entry = cache.put_allowed(b"k", principal(clock), ACCESS, 1, attributes)
    assert type(entry.span_attributes) is dict and entry.span_attributes == attributes


def test_an_entry_is_a_frozen_principal_with_only_the_principals_fields_in_view() -> None:
    clock = FakeClock()
    cache = TokenCache(clock=clock)
    full = principal(clock)
    entry = cache.put_allowed(b"k", full, ACCESS, 1, {"user.hash": "h"})
    assert isinstance(entry, Principal) and entry.access is ACCESS
    assert dataclasses.fields(entry) == dataclasses.fields(Principal)
    assert repr(entry) == repr(full) and "alice" not in repr(entry)
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.subject = "mallory"  # type: ignore[misc]
    assert entry.subject == "alice" and entry.attributes == {}  # not the span attributes


def test_the_hit_path_forgets_an_entry_at_the_ttl_cap_not_at_the_tokens_exp(
    local_issuer: LocalIssuer, clock: FakeClock
) -> None:
    iam = IAMScope(
        [local_issuer.issuer_config("corp")],
        PolicyStore(POLICY),
        hash_key=b"k" * 32,
        clock=clock,
        cache=CacheSettings(max_ttl=60),
    )
    token = local_issuer.mint(groups=["sales-east"], exp=int(clock()) + 3600)
    headers = [(b"authorization", f"Bearer {token}".encode())]
    assert iam.decide(headers).cache == "miss"
    clock.advance(59)
    assert iam.peek(headers) is not None
    clock.advance(1)
    assert iam.peek(headers) is None  # the token is good for an hour: the cap decides
    assert iam.decide(headers).cache == "miss"
    iam.close()
