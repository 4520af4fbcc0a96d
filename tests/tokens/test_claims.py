"""Claim reading: ``union``'s fast shapes against the reference, ``string_values``."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from iamscope import errors
from iamscope.tokens import claims


def reference_union(payload: dict[str, Any], paths: tuple[str, ...], **options: Any) -> Any:
    found: set[str] = set()
    for path in paths:
        value = claims.lookup(payload, path, strict=True)
        if claims.is_missing(value) or value is None:
            continue
        found.update(claims.string_values(value, claim=path, **options))
    return frozenset(found)


def outcome(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return "ok", fn(*args, **kwargs)
    except errors.IAMScopeError as exc:
        return type(exc).__name__, str(exc), exc.claim


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12))
_VALUES = st.one_of(
    _SCALARS,
    st.lists(_SCALARS, max_size=4),
    st.lists(st.text(alphabet="ab ,", max_size=5), max_size=4),
    st.dictionaries(st.sampled_from(["roles", "x"]), _SCALARS, max_size=2),
)
_OPTIONS = st.fixed_dictionaries(
    {
        "delimiter": st.sampled_from([None, ","]),
        "split_spaces": st.booleans(),
        "allow_string": st.booleans(),
    }
)


@settings(max_examples=500, deadline=None)
@given(
    payload=st.dictionaries(st.sampled_from(["groups", "scp", "scope", "realm"]), _VALUES),
    paths=st.lists(
        st.sampled_from(["groups", "scp", "scope", "realm.roles", "absent"]), max_size=3
    ),
    options=_OPTIONS,
)
def test_union_agrees_with_string_values(
    payload: dict[str, Any], paths: list[str], options: dict[str, Any]
) -> None:
    assert outcome(claims.union, payload, tuple(paths), **options) == outcome(
        reference_union, payload, tuple(paths), **options
    )
