"""The YAML checker: values located by node (file line, key path), ``${VAR}`` substitution,
duplicate keys, syntax errors, and the collector that reports every problem before raising.

Owns: walking the YAML node tree alongside the constructed data. Must not touch: which keys a
section has or what they mean (load.py), or any I/O (and asyncio, aiohttp, prometheus_client,
redis, sqlite).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

import yaml

from proxy.config.model import ConfigError
from proxy.config.units import _kind

# --- walking the YAML node tree alongside the constructed data --------------------------------

_STR_TAG: Final = "tag:yaml.org,2002:str"
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"
_ENV_RE: Final = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_ENV_REF_RE: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)

_T = TypeVar("_T")


class _Invalid:
    """Marks a value whose error has already been recorded."""


_INVALID: Final = _Invalid()


@dataclass(frozen=True, slots=True)
class _Loc:
    """A constructed YAML value with the node it came from and its key path."""

    value: object
    node: yaml.Node
    path: str

    @property
    def line(self) -> int:
        return _line(self.node)


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _child_path(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def _show(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 200 else f"{shown[:197]}..."


class _Checker:
    """Collects errors while the validators walk the document; never stops at the first one."""

    def __init__(self, source: str, env: Mapping[str, str]) -> None:
        self.source = source
        self.env = env
        self._errors: list[tuple[int, str]] = []

    @property
    def errors(self) -> list[str]:
        # Sorted by line so the report reads top to bottom however the checks were ordered.
        return [message for _, message in sorted(self._errors, key=lambda item: item[0])]

    def mark(self) -> int:
        return len(self._errors)

    def add(self, line: int, path: str, message: str) -> None:
        self._errors.append((line, f"{self.source}:{line}: {path or '(top level)'}: {message}"))

    def bad(self, loc: _Loc, message: str, value: object) -> None:
        self.add(loc.line, loc.path, f"{message} (got {_show(value)})")

    def mapping(self, loc: _Loc, allowed: Sequence[str]) -> dict[str, _Loc] | None:
        if not (isinstance(loc.value, dict) and isinstance(loc.node, yaml.MappingNode)):
            self.bad(loc, f"expected a mapping, not {_kind(loc.value)}", loc.value)
            return None
        items: dict[str, _Loc] = {}
        # After construction the node holds merged (<<) pairs first; later pairs win, as in
        # the constructed dict.
        for key_node, value_node in loc.node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "<complex key>"
            path = _child_path(loc.path, str(key))
            if key_node.tag != _STR_TAG or key not in allowed:
                self.add(_line(key_node), path, _unknown_key(str(key), allowed))
                continue
            items[key] = _Loc(loc.value[key], value_node, path)
        return items

    def sequence(self, loc: _Loc) -> list[_Loc] | None:
        if not (isinstance(loc.value, list) and isinstance(loc.node, yaml.SequenceNode)):
            self.bad(loc, f"expected a list, not {_kind(loc.value)}", loc.value)
            return None
        return [
            _Loc(value, node, f"{loc.path}[{index}]")
            for index, (value, node) in enumerate(zip(loc.value, loc.node.value, strict=True))
        ]

    def convert(self, loc: _Loc, check: Callable[[object], _T], default: _T) -> _T:
        """``check`` the substituted value; on error, record it and return ``default``."""
        value = self.substitute(loc)
        if isinstance(value, _Invalid):
            return default
        try:
            return check(value)
        except ValueError as exc:
            self.bad(loc, str(exc), value)
            return default

    def optional(
        self, items: Mapping[str, _Loc], key: str, check: Callable[[object], _T], default: _T
    ) -> _T:
        loc = items.get(key)
        if loc is None or loc.value is None:
            return default
        return self.convert(loc, check, default)

    def required(
        self,
        parent: _Loc,
        items: Mapping[str, _Loc],
        key: str,
        check: Callable[[object], _T],
        placeholder: _T,
    ) -> _T:
        loc = self.present(parent, items, key)
        return placeholder if loc is None else self.convert(loc, check, placeholder)

    def present(self, parent: _Loc, items: Mapping[str, _Loc], key: str) -> _Loc | None:
        loc = items.get(key)
        if loc is None:
            self.add(parent.line, _child_path(parent.path, key), "required key missing")
            return None
        if loc.value is None:
            self.bad(loc, "required key has no value", None)
            return None
        return loc

    def list_of(self, loc: _Loc, check: Callable[[object], _T], placeholder: _T) -> tuple[_T, ...]:
        return tuple(self.convert(item, check, placeholder) for item in self.sequence(loc) or [])

    def substitute(self, loc: _Loc) -> object:
        raw = loc.value
        if not isinstance(raw, str) or "${" not in raw:
            return raw
        problems: list[str] = []
        replaced = False

        def replace(found: re.Match[str]) -> str:
            nonlocal replaced
            if found[0] == "$${":
                return "${"
            if found[1] is None:
                problems.append("unterminated '${' (write '$${' for a literal '${')")
                return found[0]
            ref = _ENV_REF_RE.fullmatch(found[1])
            if ref is None:
                problems.append(f"bad variable reference {found[0]!r}")
                return found[0]
            replaced = True
            name, default = ref[1], ref[2]
            value = self.env.get(name)
            if default is not None and not value:
                return default
            if value is None:
                problems.append(f"environment variable {name!r} is not set and has no default")
                return found[0]
            return value

        text = _ENV_RE.sub(replace, raw)
        for problem in problems:
            self.bad(loc, problem, raw)
        if problems:
            return _INVALID
        if replaced and isinstance(loc.node, yaml.ScalarNode) and loc.node.style is None:
            return _plain_scalar(text)
        return text


def _plain_scalar(text: str) -> object:
    """Type ``text`` as YAML would an unquoted scalar: scalars only, so nothing is injected."""
    loader = yaml.SafeLoader("")
    try:
        tag = loader.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
        return loader.construct_object(yaml.ScalarNode(tag, text))
    finally:
        loader.dispose()


def _unknown_key(key: str, allowed: Sequence[str]) -> str:
    message = f"unknown key {key!r}"
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        message = f"{message} (did you mean {close[0]!r}?)"
    return f"{message}; allowed: {', '.join(allowed)}"


def _duplicate_keys(checker: _Checker, node: yaml.Node, path: str, seen: set[int]) -> None:
    """PyYAML keeps the last of duplicate keys silently; report them on the composed tree."""
    if id(node) in seen:  # an alias: already checked, and may be recursive
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "<complex key>"
            child = _child_path(path, str(key))
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                where = (key_node.tag, key_node.value)
                if where in first:
                    checker.add(
                        _line(key_node),
                        child,
                        f"duplicate key {key!r} (first on line {first[where]}; YAML would "
                        "silently keep only this one)",
                    )
                else:
                    first[where] = _line(key_node)
            _duplicate_keys(checker, value_node, child, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _duplicate_keys(checker, item, f"{path}[{index}]", seen)


def _value_loc(loc: _Loc, key: str) -> _Loc | None:
    """The located value of ``key`` in a mapping already checked, without re-reporting."""
    if isinstance(loc.value, dict) and isinstance(loc.node, yaml.MappingNode):
        for key_node, value_node in reversed(loc.node.value):
            if key_node.tag == _STR_TAG and key_node.value == key:
                return _Loc(loc.value[key], value_node, _child_path(loc.path, key))
    return None


def _syntax_error(source: str, text: str, exc: yaml.YAMLError) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        line = int(mark.line) + 1
    else:  # ReaderError (a non-printable character) has only an offset
        line = text.count("\n", 0, int(getattr(exc, "position", 0))) + 1
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    if context:
        problem = f"{context}, {problem}"
    return ConfigError([f"{source}:{line}: invalid YAML: {problem}"])
