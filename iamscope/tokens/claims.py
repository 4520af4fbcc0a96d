"""Reading claims by dotted path and shaping them into a :class:`Principal`'s fields.

Pure functions over a verified payload. Paths are dotted (``realm_access.roles``) and
match claim names that themselves contain dots or slashes (``kubernetes.io.namespace``,
``https://acme.com/groups``): at each level the longest claim name that fits wins.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from iamscope.errors import ClaimMappingError, ClaimNotList, ClaimTypeInvalid

__all__ = [
    "BOOLEAN",
    "OBJECT",
    "STRING",
    "ClaimMap",
    "FrozenClaims",
    "Kind",
    "check_types",
    "freeze",
    "lookup",
    "string_values",
    "union",
]

_MISSING = object()


class Kind(NamedTuple):
    """A JSON type a rule expects of a claim: its name for messages and the Python types
    the JSON parser makes of it (exact: bool is an int subclass, and JSON has no tuples)."""

    name: str
    types: frozenset[type]


STRING = Kind("a string", frozenset({str}))
BOOLEAN = Kind("a boolean", frozenset({bool}))
OBJECT = Kind("an object", frozenset({dict}))


def check_types(claims: Mapping[str, Any], kinds: Mapping[str, Kind], *, issuer: str) -> None:
    """Refuse a claim of the wrong JSON type before any rule reads it.

    ``null`` counts as absent, as it does everywhere in the mapping: absence never grants
    more than presence, and required claims are checked for presence on their own.
    """
    for name, kind in kinds.items():
        value = claims.get(name)
        if value is not None and type(value) not in kind.types:
            raise ClaimTypeInvalid(f"'{name}' must be {kind.name}", claim=name, issuer=issuer)


@dataclass(frozen=True, slots=True)
class ClaimMap:
    """Where a provider keeps each part of the principal.

    Each field lists paths; values found under every path are united. For ``subject``
    and each attribute the first path present wins (providers move claims between
    token versions, e.g. Entra ID's ``upn`` and ``preferred_username``).
    """

    subject: tuple[str, ...] = ("sub",)
    groups: tuple[str, ...] = ("groups",)
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ("scope", "scp")
    attributes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    delimiter: str | None = None  # for providers that send groups/roles as "a,b"
    #: Groups and roles are lists; a plain string is refused (``claim_not_list``) unless
    #: the issuer is known to send one value that way, or ``delimiter`` splits it.
    allow_string: bool = False


def lookup(claims: Mapping[str, Any], path: str, *, strict: bool = False) -> Any:
    """The value at ``path``, or the module's missing marker (see :func:`is_missing`).

    With ``strict``, a step through something that is not an object (``realm_access``
    sent as a string) is a :class:`ClaimMappingError` rather than "missing": the claim
    mapping reads strictly, policy bindings on raw claims read leniently (no match).
    """
    if path in claims:  # the common case: a top-level claim, dots in its name or not
        return claims[path]
    if "." not in path:
        return _MISSING
    node: Any = claims
    rest = path
    while True:
        if not isinstance(node, dict | Mapping):
            if strict and node is not None:
                raise ClaimMappingError(
                    f"claim '{path}' passes through a value that is not an object", claim=path
                )
            return _MISSING
        if rest in node:
            return node[rest]
        best = _longest_prefix(node, rest)
        if best is None:
            return _MISSING
        node = node[best]
        rest = rest[len(best) + 1 :]


def _longest_prefix(node: Mapping[str, Any], rest: str) -> str | None:
    best: str | None = None
    for key in node:
        if (
            isinstance(key, str)
            and rest.startswith(key)
            and rest[len(key) : len(key) + 1] == "."
            and (best is None or len(key) > len(best))
        ):
            best = key
    return best


def is_missing(value: Any) -> bool:
    return value is _MISSING


def string_values(
    value: Any,
    *,
    claim: str,
    delimiter: str | None,
    split_spaces: bool = False,
    allow_string: bool = True,
) -> tuple[str, ...]:
    """Coerce a claim to a tuple of strings, or raise :class:`ClaimMappingError`.

    A string is split on spaces (scopes) or on ``delimiter``; otherwise it is one value
    when ``allow_string``, else :class:`ClaimNotList`. A list must hold only strings.
    Anything else (numbers, objects, mixed lists) is a mapping error, never a crash and
    never silently empty.
    """
    if value is _MISSING or value is None:
        return ()
    if isinstance(value, str):
        if split_spaces:
            return tuple(value.split())
        if delimiter is not None:
            return tuple(part.strip() for part in value.split(delimiter) if part.strip())
        if not allow_string:
            raise ClaimNotList(
                f"claim '{claim}' is a string where a list is expected: set the issuer's "
                "claims.delimiter (e.g. ',') if it sends several values as 'a,b', or "
                "claims.allow_string: true if it sends a lone value as a plain string",
                claim=claim,
            )
        return (value,) if value else ()
    if isinstance(value, list | tuple):
        try:
            # A C-speed proof that every item is a string (str.join takes nothing else): a
            # generator over the items cost each cold verification a microsecond.
            "".join(value)
        except TypeError:
            raise ClaimMappingError(
                f"claim '{claim}' must be a list of strings", claim=claim
            ) from None
        return tuple(value)
    raise ClaimMappingError(f"claim '{claim}' must be a string or a list of strings", claim=claim)


def union(
    claims: Mapping[str, Any],
    paths: tuple[str, ...],
    *,
    delimiter: str | None,
    split_spaces: bool = False,
    allow_string: bool = True,
) -> frozenset[str]:
    """The strings found under every path of ``paths``, united (see :func:`string_values`)."""
    values = _NO_STRINGS
    for path in paths:
        # A top-level claim without a call to lookup(): this runs for every path of the
        # claim map on every cold verification.
        value = claims.get(path, _MISSING)
        if value is _MISSING and "." in path:
            value = lookup(claims, path, strict=True)
        if value is _MISSING or value is None:
            continue
        # The two shapes of nearly every token (a list of strings; scopes as one string)
        # straight into the set: through string_values' tuple they cost ~0.3 µs more each,
        # on every cold verification. Anything else, and every fault, is string_values'.
        if type(value) is list:
            try:
                "".join(value)  # a C-speed proof that every item is a string
                found = frozenset(value)
            except TypeError:
                found = frozenset(string_values(value, claim=path, delimiter=delimiter))
        elif split_spaces and type(value) is str:
            found = frozenset(value.split())
        else:
            found = frozenset(
                string_values(
                    value,
                    claim=path,
                    delimiter=delimiter,
                    split_spaces=split_spaces,
                    allow_string=allow_string,
                )
            )
        values = values | found if values else found  # mostly one path holds the claim
    return values


_NO_STRINGS: frozenset[str] = frozenset()


def first(claims: Mapping[str, Any], paths: tuple[str, ...]) -> tuple[str, Any]:
    """The first path with a value (not missing, null or empty string), or ``("", missing)``.

    Empty strings fall through: Cloudflare Access service tokens send ``sub: ""`` and
    name the client in ``common_name``.
    """
    for path in paths:
        value = claims.get(path, _MISSING)  # as in union(), without a call
        if value is _MISSING and "." in path:
            value = lookup(claims, path, strict=True)
        if value is not _MISSING and value is not None and value != "":
            return path, value
    return "", _MISSING


class FrozenClaims(Mapping[str, Any]):
    """A verified payload, read-only all the way down.

    A ``Principal`` is shared (cached, interned): a handler appending to
    ``claims["groups"]`` must not change what the next request sees. Values are frozen
    when read (objects become mappingproxies, arrays tuples) rather than copied up
    front, which would cost every verification a deep copy most never need.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return _freeze(self._data[key])

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        # Claim values identify people: keep them out of reprs that end up in logs.
        return f"FrozenClaims({len(self._data)} claims)"


def freeze(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    return FrozenClaims(payload)


def _freeze(value: Any) -> Any:
    if type(value) is not dict and type(value) is not list:
        return value
    # Children before parents, without recursion: a signed payload may nest as deep as
    # the JSON parser allows (~1,000 levels), deeper than a handler's remaining stack.
    frozen: dict[int, Any] = {}
    stack = [value]
    while stack:
        node = stack[-1]
        items = node.values() if type(node) is dict else node
        pending = [v for v in items if type(v) in _CONTAINERS and id(v) not in frozen]
        if pending:
            stack.extend(pending)
            continue
        stack.pop()
        if type(node) is dict:
            frozen[id(node)] = MappingProxyType({k: frozen.get(id(v), v) for k, v in node.items()})
        else:
            frozen[id(node)] = tuple(frozen.get(id(v), v) for v in node)
    return frozen[id(value)]


_CONTAINERS = (dict, list)


def _done(value: Any, frozen: dict[int, Any]) -> Any:
    return frozen[id(value)] if type(value) in _CONTAINERS else value
