"""The configuration files' one reading: YAML (JSON accepted) into mappings that
remember their lines, and the errors every loader shares — unknown keys, with the
file, the line and a "did you mean".

Every config block (issuers, policy, telemetry, cache, gateway) is parsed by its own
module; this one owns what they have in common, so an unknown key reads the same
wherever it sits.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard, cast

import yaml

from iamscope.errors import ConfigError

__all__ = [
    "Located",
    "LocatedList",
    "decode",
    "did_you_mean",
    "item_line",
    "key_text",
    "parse_text",
    "read_bytes",
    "read_text",
    "reject_huge_integers",
    "reject_unknown",
    "shown",
]


class Located(dict[str, Any]):
    """A mapping that remembers the line of each key (1-based), for error messages."""

    line: int | None = None
    lines: dict[str, int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lines = {}


class LocatedList(list[Any]):
    """A list that remembers its line and each item's line (1-based): an item that is
    not a mapping has no line of its own to report."""

    line: int | None = None
    lines: list[int]

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.lines = []


def item_line(items: Any, index: int) -> int | None:
    """The line of ``items[index]`` when ``items`` came from a file."""
    lines = getattr(items, "lines", None)
    if isinstance(lines, list) and 0 <= index < len(lines):
        return int(lines[index])
    line = getattr(items, "line", None)
    return line if isinstance(line, int) else None


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2 booleans: only true/false. YAML 1.1 also reads yes/no/on/off
    (so ``country: NO`` would become False), a classic way for a policy to mean
    something its author did not write.

    Every failure is a ConfigError with the line: a value its type cannot hold (month
    13, a ``!!float x``) included, and a document that aliases would blow up is refused
    before it is built."""

    def construct_document(self, node: yaml.Node) -> Any:
        check_expansion(node)
        return super().construct_document(node)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ConfigError, yaml.YAMLError):
            raise
        except (ValueError, TypeError, ArithmeticError) as exc:  # OverflowError included
            tag = node.tag.rsplit(":", 1)[-1]
            raise ConfigError(
                f"not a valid {tag}: {str(exc)[:80]}", line=node.start_mark.line + 1
            ) from None


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Located:
    mapping = Located()
    mapping.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key: Any = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int | float | bool) and key is not None:
            raise ConfigError("keys must be plain scalars", line=key_node.start_mark.line + 1)
        if key in mapping:
            # YAML allows this silently; in a security config it is always a mistake.
            raise ConfigError(
                f"duplicate key {key!r}", line=key_node.start_mark.line + 1, key=str(key)
            )
        name = cast(str, key)  # a scalar; non-string keys are reported by the loaders
        mapping[name] = loader.construct_object(value_node, deep=True)
        mapping.lines[name] = key_node.start_mark.line + 1
    return mapping


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LocatedList:
    items = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    items.line = node.start_mark.line + 1
    items.lines = [child.start_mark.line + 1 for child in node.value]
    return items


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)

#: Longest integer text read: nothing in a configuration needs more, and Python refuses
#: decimal conversions past 4,300 digits (a hex or base-60 integer gets there in fewer).
MAX_INTEGER_CHARS = 100
#: Nodes that aliases may add to a document: this many, plus ten for each node written
#: (a large file reusing an anchored role list in every binding stays loadable). An
#: alias repeats what its anchor names, so anchors doubled inside each other grow a
#: document exponentially (an 802-byte policy expanded to billions of nodes); a document
#: past the allowance is refused before anything is built from it, so loading stays
#: linear in the file.
MAX_ALIAS_EXPANSION = 100_000
ALIAS_EXPANSION_PER_NODE = 10


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    if len(node.value) > MAX_INTEGER_CHARS:
        raise ConfigError(
            f"an integer of more than {MAX_INTEGER_CHARS} characters",
            line=node.start_mark.line + 1,
        )
    return loader.construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _distinct_nodes(root: yaml.Node) -> int:
    """Nodes as written (an anchored node once, however often it is aliased)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen.add(id(node))
            stack.extend(_children(node))
    return len(seen)


def check_expansion(root: yaml.Node, limit: int | None = None) -> None:
    """A ConfigError at the smallest part of the document whose aliases expand it past
    ``limit`` nodes (default: the nodes written plus the alias allowance), or at an
    alias inside the node it names. Linear in the nodes written: each is sized once."""
    if limit is None:
        written = _distinct_nodes(root)
        limit = written * (1 + ALIAS_EXPANSION_PER_NODE) + MAX_ALIAS_EXPANSION
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        line = node.start_mark.line + 1
        if id(node) in open_nodes:
            raise ConfigError("a YAML alias names a node that contains it", line=line)
        open_nodes.add(id(node))
        total = 1 + sum(size(child) for child in _children(node))
        open_nodes.discard(id(node))
        if total > limit:
            raise ConfigError(
                f"YAML aliases expand this to over {limit:,} nodes; write it out or "
                "use fewer aliases",
                line=line,
            )
        sizes[id(node)] = total
        return total

    size(root)


def read_bytes(path: Path) -> bytes:
    """A config or policy file's bytes, with every failure a ConfigError."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from None


def decode(data: bytes, source: str | None) -> str:
    """UTF-8 text, or a ConfigError saying where decoding failed."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 (byte {exc.start})", source=source) from None


def read_text(path: Path) -> str:
    """A config or policy file's text, with every failure a ConfigError."""
    return decode(read_bytes(path), str(path))


def parse_text(text: str, source: str | None = None) -> Any:
    """YAML (a superset of JSON) into mappings that remember their lines."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise ConfigError("nested too deeply", source=source) from None
    except ConfigError as exc:
        raise ConfigError(exc.detail, source=source, line=exc.line, key=exc.key) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(
            f"not valid YAML: {getattr(exc, 'problem', exc)}", source=source, line=line
        ) from None


#: Longest value an error message shows whole; the rest is cut (a Python mapping can
#: hold megabytes where a name belongs).
MAX_SHOWN = 80
#: Past this, a word is no misspelt name: comparing it with every choice costs for nothing.
MAX_SUGGESTED = 256
_HUGE_INTEGER = 10**MAX_INTEGER_CHARS


def _is_huge(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _HUGE_INTEGER


def shown(value: object, limit: int = MAX_SHOWN) -> str:
    """``repr(value)`` for an error message, never failing and never long.

    Python refuses decimal conversions past 4,300 digits (a ValueError), so an integer
    from a Python mapping could turn a config error into a crash while its message was
    being written; such an integer is shown by its size instead."""
    if _is_huge(value):
        digits = int(abs(value).bit_length() * 0.30103) + 1  # log10(2): no conversion
        text = f"<an integer of about {digits:,} digits>"
    else:
        try:
            text = repr(value)
        except (ValueError, RecursionError):  # a huge integer inside, or nested too deeply
            text = f"<a {type(value).__name__} too large to show>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def key_text(key: object) -> str:
    """A mapping key as ConfigError's ``key``: a string as it is, anything else shown."""
    return key if isinstance(key, str) else shown(key)


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string (always for a
    word that is not a string of a plausible length)."""
    if not isinstance(word, str) or len(word) > MAX_SUGGESTED:
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def reject_unknown(
    data: Mapping[str, Any], allowed: Sequence[str], where: str | None, what: str
) -> None:
    """A ConfigError naming the first key of ``data`` not in ``allowed`` (its line when
    ``data`` came from a file), or of ``data`` itself when it is not a mapping."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{what} settings must be a mapping", source=where)
    lines = getattr(data, "lines", {})
    for key in data:
        if key not in allowed:
            raise ConfigError(
                f"unknown {what} key {shown(key)}{did_you_mean(key, allowed)}",
                source=where,
                line=lines.get(key),
                key=key_text(key),
            )


# Where the walk is: (the parent's link, this step as text), rendered only on error, so
# deep nesting costs a tuple per level rather than a growing string.
_Link = tuple["_Link | None", str] | None


def _rendered(link: _Link) -> str:
    steps: list[str] = []
    while link is not None:
        link, step = link
        steps.append(step)
    return "".join(reversed(steps)).lstrip(".")


def reject_huge_integers(data: object, where: str | None = None, what: str = "") -> None:
    """A ConfigError at the first integer, key or value, of more than
    :data:`MAX_INTEGER_CHARS` digits in a Python mapping: the rule a file's text
    already follows (nothing in a configuration needs more), so a mapping given in
    code cannot carry one to a check that would print it. Iterative and linear: each
    container is visited once, however often it is shared or however deeply nested."""
    seen: set[int] = set()
    stack: list[tuple[object, _Link]] = [(data, (None, what) if what else None)]
    while stack:
        node, link = stack.pop()
        if isinstance(node, Mapping | list | tuple):
            if id(node) in seen:
                continue
            seen.add(id(node))
        if isinstance(node, Mapping):
            for key, value in node.items():
                here = (link, f".{key_text(key)}")
                if _is_huge(key):
                    raise _huge(here, where, key_text(key))
                stack.append((value, here))
        elif isinstance(node, list | tuple):
            stack.extend((value, (link, f"[{i}]")) for i, value in enumerate(node))
        elif _is_huge(node):
            raise _huge(link, where)


def _huge(link: _Link, where: str | None, key: str | None = None) -> ConfigError:
    at = f" at {_rendered(link)}" if link is not None else ""
    return ConfigError(
        f"an integer of more than {MAX_INTEGER_CHARS} digits{at}", source=where, key=key
    )
