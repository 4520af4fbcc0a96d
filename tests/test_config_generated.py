"""Generated configuration files: whatever a file holds, loading it gives a config or a
ConfigError naming the file (and, where a key is involved, the line) — never another
exception, and never work that grows faster than the file (YAML aliases).

Documents are the reference config with a few generated mutations (a value replaced by
junk, a key dropped, a key added), written as YAML or JSON, sometimes cut short or with
a byte changed; and alias-heavy YAML whose expansion would be exponential. Sizes are
bounded, so a loader doing work linear in the file finishes each example quickly; one
that expands aliases blindly would not finish at all.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from iamscope.config import load_config
from iamscope.errors import ConfigError
from iamscope.policy import load_policy

REFERENCE = Path(__file__).resolve().parent.parent / "examples" / "policy" / "iamscope.yaml"


def base_config() -> dict[str, Any]:
    """The reference config plus every other block, so mutations reach them all."""
    data: dict[str, Any] = yaml.safe_load(REFERENCE.read_text())
    data["issuers"][0]["jwks_uri"] = "https://acme.okta.com/oauth2/default/v1/keys"
    data["issuers"][0]["leeway"] = 30
    data["issuers"][0]["source"] = {"cookie": "session"}
    data["issuers"][0]["keys"] = {"refresh": 60, "removed_key_grace": 0, "max_keys": 20}
    data["cache"] = {"max_entries": 1000, "max_ttl": 300}
    data["gateway"] = {
        "upstream": "otlp",
        "endpoint": "https://otlp.example/v1/traces",
        "timeout": 5,
        "projects": {"checkout": {"token_env": "LS_TOKEN_CHECKOUT"}},
    }
    data["shared"] = {"redis_url_env": "IAMSCOPE_REDIS_URL", "stale_after": 5}
    data["policy"]["roles"]["analyst"]["rows"]["orders"] = [
        {"account": "$account", "or": [{"total": {"lt": 100}}, {"not": {"state": None}}]}
    ]
    return data


BASE = base_config()


@dataclass(frozen=True)
class Raw:
    """Text written into the document as it is: what a dumper would never produce."""

    text: str


RAW_TOKENS = [
    "9" * 5000,  # over Python's 4,300-digit limit for int()
    "-" + "9" * 4400,
    "0x" + "f" * 4000,  # a hex integer whose decimal form is over the limit
    "1" + "_0" * 3000,
    ":".join(["59"] * 2000),  # YAML 1.1 base 60
    "1e999",
    ".inf",
    "-.inf",
    ".nan",
    "2026-13-45",  # a timestamp the resolver matches and the constructor refuses
    "2026-02-30 25:61:61",
    "!!binary aGVsbG8=",
    "!!set {a, b}",
    "!!omap [{a: 1}]",
    "!!python/name:os.system",
    "!!float x",
    "!!int 0xZZ",
    "*undefined",
    "&anchor 1",
    "? [a, b]\n",
    '"\\ud800"',
]
URLS = [
    "https://[::1",
    "http://[::1]:99999",
    "https://[fe80::1%25eth0]",
    "https://]x[",
    "https://acme.okta.com:-1/",
    "https://user@:80",
    "http://" + "a" * 300,
    "",
]
WORDS = [
    "$region",
    "$account",
    "$$x",
    "$nope",
    "*",
    "all",
    "none",
    "okta",
    "generic",
    "github-actions",
    "lightstep",
    "otlp",
    "bearer",
    "sales:read",
    "read",
    "priority",
    "issuers",
]
KEYS = sorted(
    {
        "issuers", "policy", "telemetry", "cache", "gateway", "shared", "name", "issuer",
        "audience", "jwks_uri", "keys_url", "preset", "claims", "algorithms", "token_types",
        "max_lifetime", "leeway", "source", "max_token_bytes", "groups", "delimiter",
        "version", "attributes", "roles", "bindings", "multi", "claim", "permissions",
        "rows", "traces", "project", "environments", "actions", "priority", "owner",
        "exporter", "projects", "default_project", "token_env", "endpoint", "timeout",
        "retries", "max_inflight", "upstream", "max_entries", "max_ttl", "stale_after",
        "and", "or", "not", "lt", "in", "is_null", "region", "account", "cookie",
        "keys", "refresh", "min_refresh", "removed_key_grace", "fetch_timeout", "max_bytes",
    }
)  # fmt: skip

# What files and mappings both hold; each adds its own way of going wrong below.
PLAIN_SCALARS = [
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(WORDS + URLS),
]
PLAIN_KEYS = [st.sampled_from(KEYS), st.text(max_size=8), st.integers(min_value=-5, max_value=5)]
scalars = st.one_of(*PLAIN_SCALARS, st.sampled_from(RAW_TOKENS).map(Raw))
keys = st.one_of(
    *PLAIN_KEYS, st.sampled_from(["9" * 5000, "0x" + "f" * 4000, "2026-13-45"]).map(Raw)
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


def paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in ``data``: its own path, then its children's."""
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found += paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found += paths(value, (*prefix, i))
    return found


def mutate(data: Any, path: tuple[Any, ...], how: str, value: Any, key: Any) -> Any:
    if not path:
        return value if how == "replace" else data
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if how == "replace":
        parent[last] = value
    elif how == "drop" and isinstance(parent, dict):
        del parent[last]
    elif how == "drop":
        parent.pop(last)
    elif isinstance(parent[last], dict):
        parent[last][key] = value
    elif isinstance(parent[last], list):
        parent[last].append(value)
    return data


@st.composite
def documents(
    draw: st.DrawFn, values: st.SearchStrategy[Any] = values, keys: st.SearchStrategy[Any] = keys
) -> Any:
    """The whole config, or a policy file of its own, with a few mutations."""
    data = copy.deepcopy(BASE if draw(st.booleans()) else BASE["policy"])
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        places = paths(data)
        path = draw(st.sampled_from(places))
        how = draw(st.sampled_from(["replace", "drop", "add"]))
        data = mutate(data, path, how, draw(values), draw(keys))
    return data


def emit(value: Any, indent: int = 0) -> str:
    """YAML flow style spread over lines (so lines differ), which is also JSON when no
    Raw token is in it."""
    pad = "  " * (indent + 1)
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{pad}{emit(k, indent + 1)}: {emit(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        items = [pad + emit(v, indent + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    if isinstance(value, float) and value != value:
        return ".nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return ".inf" if value > 0 else "-.inf"
    return json.dumps(value)


def as_block_yaml(value: Any) -> str:
    """The document in block style when no Raw token is in it (yaml.dump cannot write
    them), else flow style."""
    try:
        return yaml.safe_dump(value, sort_keys=False, allow_unicode=True)
    except (yaml.YAMLError, TypeError):
        return emit(value)


@st.composite
def texts(draw: st.DrawFn) -> str:
    data = draw(documents())
    text = as_block_yaml(data) if draw(st.booleans()) else emit(data)
    damage = draw(st.sampled_from(["none", "none", "cut", "byte"]))
    if damage == "cut":
        text = text[: draw(st.integers(min_value=0, max_value=len(text)))]
    elif damage == "byte" and text:
        at = draw(st.integers(min_value=0, max_value=len(text) - 1))
        text = text[:at] + draw(st.sampled_from(list("{}[]:,&*!|>'\"#\t\n -?%@`\x00"))) + text[at:]
    return text


def alias_bomb(depth: int, fanout: int, where: str) -> str:
    """A policy whose row rule (or another list) expands to fanout**depth nodes."""
    defs = ["        d0: &a0 {region: east}"]
    for i in range(1, depth + 1):
        refs = ", ".join([f"*a{i - 1}"] * fanout)
        body = f"{{or: [{refs}]}}" if where == "rows" else f"[{refs}]"
        defs.append(f"        d{i}: &a{i} {body}")
    rows = "\n".join(defs) if where == "rows" else "        sales: all"
    lists = "" if where == "rows" else "\n".join(
        ["x0: &a0 [east]"]
        + [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * fanout)}]" for i in range(1, depth + 1)]
    )  # fmt: skip
    if where == "rows":
        return (
            'version: "1"\nattributes: {region: {multi: true}}\nroles:\n  r:\n    rows:\n'
            f"{rows}\nbindings: [{{groups: [g], roles: [r]}}]\n"
        )
    # Aliases in the config's lists: under an unknown key, then reused as a value.
    return f"{lists}\nissuers: [{{name: *a{depth}, issuer: *a{depth}}}]\n"


def check(path: Path, load: Any) -> None:
    try:
        load(path)
    except ConfigError as exc:
        assert exc.source == str(path), f"no file named: {exc}"
        assert not str(exc).startswith("<config>"), str(exc)
        if exc.key is not None:
            assert exc.line is not None, f"a key but no line: {exc}"
        str(exc)  # the message itself can be built


SLOW = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@SLOW
@given(text=texts())
def test_any_generated_config_file_loads_or_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "iamscope.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    check(path, load_config)
    check(path, load_policy)


@SLOW
@given(data=documents())
def test_any_generated_json_file_loads_or_is_a_config_error(tmp_path: Path, data: Any) -> None:
    path = tmp_path / "iamscope.json"
    path.write_text(emit(data))
    check(path, load_config)
    check(path, load_policy)


@settings(max_examples=40, deadline=None)
@given(
    depth=st.integers(min_value=1, max_value=40),
    fanout=st.integers(min_value=2, max_value=9),
    where=st.sampled_from(["rows", "lists"]),
)
def test_aliases_never_make_loading_explode(depth: int, fanout: int, where: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "policy.yaml"
        path.write_text(alias_bomb(depth, fanout, where))
        check(path, load_config)
        check(path, load_policy)


def test_an_alias_bomb_is_refused_naming_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(alias_bomb(30, 2, "rows"))
    with pytest.raises(ConfigError, match="alias") as info:
        load_policy(path)
    assert info.value.source == str(path) and info.value.line is not None


# --- the faults found by hand and by the generator, each pinned with its line ----------

ISSUER = "issuers:\n  - name: corp\n    issuer: https://corp.example\n    audience: api\n"
POLICY = 'policy:\n  version: "1"\n'


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (ISSUER.replace("https://corp.example", '"https://[::1"'), 3, "http"),
        (ISSUER + '    jwks_uri: "https://[fe80::1"\n', 5, "jwks_uri"),
        (ISSUER + "    preset: []\n", 5, "unknown preset"),
        (ISSUER + "    leeway: " + "9" * 5000 + "\n", 5, "integer"),
        (ISSUER + "    ? " + "9" * 5000 + "\n    : 1\n", 5, "integer"),
        (ISSUER + "    preset: 0x" + "f" * 4000 + "\n", 5, "integer"),
        (ISSUER + "    max_lifetime: 2026-13-45\n", 5, "timestamp"),
        (ISSUER + "    leeway: !!float x\n", 5, "float"),
        ("cache: {}\nissuers: 5\n", 2, "non-empty list"),
        ("cache: {}\nissuers: []\n", 2, "non-empty list"),
        ("cache: {}\nissuers:\n  - 5\n", 3, "mapping"),
        (ISSUER + "telemetry: [1]\n", 5, "mapping"),
        (ISSUER + "gateway: {upstream: otlp}\n", 5, "endpoint"),
        (ISSUER + "gateway:\n  upstream: otlp\n  timeout: 1e999\n", 7, "timeout"),
        (ISSUER + "shared: 5\n", 5, "mapping"),
        ("cache: {}\n", 1, "issuers"),
    ],
)
def test_config_faults_are_config_errors_with_file_and_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = tmp_path / "iamscope.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert (info.value.source, info.value.line) == (str(path), line)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("policy: 5\n", 1, "policy must be a mapping"),
        (POLICY + "  roles: [1]\n", 3, "roles must be a mapping"),
        (POLICY + "  roles: {r: 5}\n", 3, "must be a mapping"),
        (POLICY + "  attributes: 5\n", 3, "attributes must be a mapping"),
        (POLICY + "  bindings: {a: 1}\n", 3, "must be a list"),
        (POLICY + "  roles: {r: {}}\n  bindings:\n    - {groups: [g], roles: [r]}\n    - x\n", 6,
         "binding must be a mapping"),
        (POLICY + "  roles:\n    r:\n      traces:\n        - {project: p}\n        - 5\n", 7,
         "trace grant must be a mapping"),
    ],
)  # fmt: skip
def test_policy_faults_name_the_line_of_what_is_not_a_mapping(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = tmp_path / "iamscope.yaml"
    path.write_text(ISSUER + text)
    with pytest.raises(ConfigError, match=message) as info:
        load_policy(path)
    assert (info.value.source, info.value.line) == (str(path), line + 4)


def test_a_timeout_too_large_for_a_float_is_a_config_error() -> None:
    from iamscope.gateway.settings import GatewaySettings

    with pytest.raises(ConfigError, match="timeout"):
        GatewaySettings.from_mapping({"endpoint": "https://o.example", "timeout": 10**400})


# --- errors name the file they came from, wherever they are found ----------------------

SHARED = ISSUER + 'policy: {version: "1"}\nshared: {redis_url_env: IAMSCOPE_TEST_NO_SUCH_VAR}\n'


@pytest.mark.parametrize(
    ("text", "kw", "message"),
    [
        (ISSUER + 'policy: {version: "1"}\n', {}, "IAMSCOPE_HASH_KEY"),
        (SHARED, {"hash_key": b"k" * 32}, "IAMSCOPE_TEST_NO_SUCH_VAR"),
        (ISSUER + 'policy: {version: "1", roles: [1]}\n', {"hash_key": b"k" * 32}, "roles"),
    ],
)
def test_building_from_a_file_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, kw: Any, message: str
) -> None:
    from iamscope import IAMScope

    monkeypatch.delenv("IAMSCOPE_HASH_KEY", raising=False)
    monkeypatch.delenv("IAMSCOPE_TEST_NO_SUCH_VAR", raising=False)
    path = tmp_path / "iamscope.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        IAMScope.from_config(path, **kw)
    assert info.value.source == str(path) and str(info.value).startswith(f"{path}")


def test_a_large_file_may_reuse_an_anchor_in_every_binding(tmp_path: Path) -> None:
    roles = ", ".join(f"r{i}" for i in range(20))
    lines = [
        'version: "1"',
        "roles: {" + ", ".join(f"r{i}: {{}}" for i in range(20)) + "}",
        "bindings:",
        f"  - {{groups: [g0], roles: &all [{roles}]}}",
        *(f"  - {{groups: [g{i}], roles: *all}}" for i in range(1, 10_000)),
    ]
    path = tmp_path / "policy.yaml"
    path.write_text("\n".join(lines) + "\n")  # aliases add 210,000 nodes to ~40,000
    assert len(load_policy(path).bindings) == 10_000


# --- Python mappings: what code passes instead of a file --------------------------------
# No text limits a mapping's integers, and Python refuses to print one past 4,300 digits
# (a ValueError while the error message is written). Whatever a mapping holds, loading
# it gives a config or a ConfigError whose message can be printed.

# Drawn as digit counts and built by map(): hypothesis prints strategies (and values it
# draws from a list) with repr(), which is exactly what such integers break.
huge_integers = st.builds(
    lambda digits, sign: sign * 10 ** (digits - 1),
    st.sampled_from([101, 4301, 5000, 20_000]),  # 101: one digit over the limit
    st.sampled_from([1, -1]),
)
py_scalars = st.one_of(*PLAIN_SCALARS, huge_integers)
py_keys = st.one_of(*PLAIN_KEYS, huge_integers, st.tuples(huge_integers))
py_values = st.recursive(
    py_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner),
        st.dictionaries(py_keys, inner, max_size=4),
    ),
    max_leaves=12,
)


def check_mapping(data: Any) -> None:
    from iamscope.telemetry.settings import TelemetrySettings

    loaders: list[Any] = [load_config, load_policy]
    if isinstance(data, dict) and isinstance(data.get("telemetry"), dict):
        loaders.append(lambda d: TelemetrySettings.from_mapping(d["telemetry"]))
    for load in loaders:
        try:
            load(data)
        except ConfigError as exc:
            assert exc.source is None and str(exc).startswith("<config>"), str(exc)
            assert len(str(exc)) < 2_000, "an error message that prints a value whole"


@SLOW
@given(data=documents(py_values, py_keys))
def test_any_generated_mapping_loads_or_is_a_config_error(data: Any) -> None:
    assume(isinstance(data, dict))  # anything else is taken for a path
    check_mapping(data)


def at(path: tuple[Any, ...], value: Any, *, key: bool = False) -> dict[str, Any]:
    """The base config with ``value`` at ``path``, or as the key named by its last step."""
    data = copy.deepcopy(BASE)
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    if key:
        parent[value] = parent.pop(path[-1])
    else:
        parent[path[-1]] = value
    return data


HUGE_PLACES = [
    ("issuers", 0, "preset"),
    ("issuers", 0, "leeway"),
    ("policy", "version"),
    ("policy", "roles", "analyst"),
    ("policy", "roles", "analyst", "permissions"),
    ("policy", "roles", "analyst", "rows", "sales", "region"),
    ("policy", "bindings", 2, "priority"),
    ("policy", "bindings", 3, "claims", "repository"),
    ("policy", "attributes", "region"),
    ("telemetry", "projects", "sales"),
    ("telemetry", "default_project", "token_env"),
    ("cache", "max_entries"),
    ("shared", "stale_after"),
    ("gateway", "timeout"),
]


@pytest.mark.parametrize("key", [False, True], ids=["value", "key"])
@pytest.mark.parametrize("place", HUGE_PLACES, ids=lambda p: ".".join(map(str, p)))
def test_an_integer_over_4300_digits_in_a_mapping_is_a_config_error(
    place: tuple[Any, ...], key: bool
) -> None:
    huge = 10**5000
    data = at(place, huge, key=key)
    with pytest.raises(ConfigError, match="an integer of more than 100 digits") as info:
        load_config(data)
    assert str(info.value).startswith("<config>: ")
    shown = ".".join(f"[{p}]" if isinstance(p, int) else p for p in place).replace(".[", "[")
    if not key:
        assert f" at {shown}" in str(info.value)


@pytest.mark.parametrize("key", [False, True], ids=["value", "key"])
def test_the_policy_loader_refuses_a_huge_integer_in_a_mapping(key: bool) -> None:
    data = at(("policy", "bindings", 0, "roles"), [10**5000], key=False)["policy"]
    if key:
        data = at(("policy", "roles", "admin"), 10**5000, key=True)["policy"]
    with pytest.raises(ConfigError, match="an integer of more than 100 digits"):
        load_policy(data)


def test_messages_show_huge_integers_by_size_and_cut_long_values() -> None:
    from iamscope._yaml import reject_unknown, shown

    assert shown(10**5000) == "<an integer of about 5,001 digits>"
    assert shown([10**5000]) == "<a list too large to show>"
    assert shown("x" * 1000).endswith("…") and len(shown("x" * 1000)) == 80
    assert shown(12) == "12"
    with pytest.raises(ConfigError, match=r"unknown cache key <an integer of about 4,401"):
        reject_unknown({-(10**4400): 1}, ["max_entries"], None, "cache")


def test_issuers_built_in_code_show_a_huge_preset_by_size() -> None:
    """``issuers_from_config`` is public: called directly (no load_config check first),
    an odd preset is still a ConfigError whose message never fails to print."""
    from iamscope.tokens import issuers_from_config

    base = {"name": "corp", "issuer": "https://idp.example", "audience": "api://x"}
    with pytest.raises(ConfigError, match=r"unknown preset <an integer of about 5,001 digits>"):
        issuers_from_config([{**base, "preset": 10**5000}])
    with pytest.raises(ConfigError, match=r"unknown preset 'okat'.*did you mean 'okta'"):
        issuers_from_config([{**base, "preset": "okat"}])
