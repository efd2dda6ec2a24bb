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

    def __init__(
        self,
        source: str,
        env: Mapping[str, str],
        schema: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """``schema``: every section's keys by its path (a list's items as ``[]``, the top level
        as ``""``), so that a key put under the wrong section is pointed to its own."""
        self.source = source
        self.env = env
        self.schema: Mapping[str, Sequence[str]] = schema or {}
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
                message = _unknown_key(str(key), allowed, loc.path, self.schema)
                self.add(_line(key_node), path, message)
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


def _unknown_key(
    key: str, allowed: Sequence[str], parent: str, schema: Mapping[str, Sequence[str]]
) -> str:
    message = f"unknown key {key!r}"
    elsewhere = _elsewhere(key, parent, schema)
    close = difflib.get_close_matches(key, allowed, n=1)
    name, colon, value = key.partition(":")
    if colon and name in allowed and value and not value.startswith(" "):
        # `{url:http://x}` is one key in YAML, with no value: the space after ':' is missing.
        message = f"{message} (did you mean '{name}: {value}'? a key needs ': ', with a space)"
    elif elsewhere:
        message = f"{message} (did you mean {_either(elsewhere)}?)"
    elif close:
        message = f"{message} (did you mean {close[0]!r}?)"
    return f"{message}; allowed: {', '.join(allowed)}"


_INDEX_RE: Final = re.compile(r"\[[0-9]+\]")


def _elsewhere(key: str, parent: str, schema: Mapping[str, Sequence[str]]) -> list[str]:
    """The full paths of the other sections that take ``key``, nearest to ``parent`` first: of
    those sharing the most ancestry with it, with ``parent``'s list indexes where they share it.

        >>> _elsewhere("timeout", "routes[2]", {"routes[]": ("name",),
        ...     "routes[].production": ("timeout",), "store": ("timeout",)})
        ['routes[2].production.timeout']
    """
    here = parent.split(".") if parent else []
    pattern = [_INDEX_RE.sub("[]", part) for part in here]
    found: list[tuple[int, str]] = []
    for section, keys in schema.items():
        parts = section.split(".") if section else []
        if parts == pattern or key not in keys:
            continue
        shared = 0
        while shared < min(len(parts), len(pattern)) and parts[shared] == pattern[shared]:
            shared += 1
        path = ".".join([*here[:shared], *parts[shared:], key])
        found.append((shared, path if parts else f"{path} (at the top level)"))
    nearest = max((shared for shared, _ in found), default=0)
    return [path for shared, path in found if shared == nearest]


def _either(paths: Sequence[str]) -> str:
    return paths[0] if len(paths) == 1 else f"{', '.join(paths[:-1])} or {paths[-1]}"


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
    """A YAML syntax error as one line: the file, and the line and column to look at (the start
    of what was left open, for an unclosed quote or bracket), PyYAML's words, and a hint."""
    lines = text.split("\n")
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML refuses: only an offset
        before = text[: int(exc.position)]
        line, column = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        return ConfigError(
            [
                f"{source}:{line}:{column}: invalid YAML: unacceptable character"
                f" #x{exc.character:04x}: {exc.reason}; hint: remove it (control characters are"
                " not allowed in YAML, even quoted: in double quotes, write it as an escape such"
                " as \\x1f)"
            ]
        )
    problem_mark = getattr(exc, "problem_mark", None)
    context_mark = getattr(exc, "context_mark", None)
    problem = str(getattr(exc, "problem", None) or exc)
    context = str(getattr(exc, "context", None) or "")
    where, hint = _syntax_hint(context, problem, _at(problem_mark), _at(context_mark), lines)
    what = f"{context}, {problem}" if context else problem
    at = "" if where is None else f"{where[0] + 1}:{where[1] + 1}:"
    suffix = f"; hint: {hint}" if hint else ""
    return ConfigError([f"{source}:{at} invalid YAML: {what}{suffix}"])


_Where = tuple[int, int]  # a line and a column, from 0


def _at(mark: yaml.Mark | None) -> _Where | None:
    return None if mark is None else (int(mark.line), int(mark.column))


_KEY_NO_SPACE_RE: Final = re.compile(r"\s*(?:-\s+)?([^\s:#'\"]+):(\S+)")
_KEY_RE: Final = re.compile(r"\s*(?:-\s+)?[^\s#][^#]*?:(?:\s|$)")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _line_above(lines: Sequence[str], index: int) -> int | None:
    """The index of the nearest line above ``index`` holding more than a comment."""
    for above in range(min(index, len(lines)) - 1, -1, -1):
        if lines[above].strip() and not lines[above].lstrip().startswith("#"):
            return above
    return None


def _open_bracket(lines: Sequence[str], before: _Where) -> tuple[_Where, str] | None:
    """The innermost '[' or '{' still open at `before`, and where it is: read from PyYAML's
    scanner (so brackets in quotes, comments and plain values are not counted); None when
    none is."""
    opened: list[tuple[_Where, str]] = []
    try:
        for token in yaml.scan("\n".join(lines), Loader=yaml.SafeLoader):
            at = (int(token.start_mark.line), int(token.start_mark.column))
            if at >= before:
                break
            if isinstance(token, yaml.FlowSequenceStartToken | yaml.FlowMappingStartToken):
                opened.append((at, "[" if isinstance(token, yaml.FlowSequenceStartToken) else "{"))
            elif isinstance(token, yaml.FlowSequenceEndToken | yaml.FlowMappingEndToken) and opened:
                opened.pop()
    except yaml.YAMLError:  # the scanner stops where the text stops being YAML
        pass
    return opened[-1] if opened else None


def _syntax_hint(
    context: str,
    problem: str,
    problem_at: _Where | None,
    context_at: _Where | None,
    lines: Sequence[str],
) -> tuple[_Where | None, str | None]:
    """Where to point (PyYAML's problem mark, the start of what was left open, or the line that
    caused it) and what most likely went wrong, read from PyYAML's words and the lines around."""

    def line(at: _Where) -> str:
        return lines[at[0]] if at[0] < len(lines) else ""

    if "'\\t'" in problem:
        return problem_at, "YAML indents with spaces, never tabs: replace the tab with spaces"
    if "quoted scalar" in context and context_at is not None:
        if "escape" in problem:
            return problem_at, (
                "in double quotes a backslash starts an escape such as \\n: use single quotes,"
                " or write \\\\ for a backslash"
            )
        quote = line(context_at)[context_at[1] : context_at[1] + 1] or "'"
        return context_at, (
            f"the {quote} quote opened here is never closed: end the value with a matching {quote}"
        )
    if context == "while scanning a simple key" and context_at is not None:
        found = _KEY_NO_SPACE_RE.match(line(context_at))
        if found is not None:
            key, value = found[1], found[2]
            return context_at, f"put a space after the colon: '{key}: {value}', not '{key}:{value}'"
        return context_at, "each line of a mapping is 'key: value': is the colon missing?"
    if problem == "mapping values are not allowed here" and problem_at is not None:
        here = line(problem_at)
        if ": " in here[: problem_at[1]].lstrip(" -"):
            return problem_at, (
                "a value that contains ': ' must be quoted, as in key: 'a: b' (or a line break"
                " is missing before the next key)"
            )
        above = _line_above(lines, problem_at[0])
        if above is not None and _KEY_RE.match(lines[above]) is None:
            return (above, _indent(lines[above])), (
                f"this line is not 'key: value' (is its colon missing?), so YAML reads it as"
                f" running on into line {problem_at[0] + 1}"
            )
        start = (problem_at[0], _indent(here))
        if above is not None and _indent(here) > _indent(lines[above]):
            return start, (
                f"this line is indented more than line {above + 1}, whose key already has a"
                " value: indent it as the other keys of its mapping"
            )
        return start, (
            "check this line's indentation against the keys above it (the keys of one mapping"
            " start in the same column), or quote a value that contains ': '"
        )
    if problem.startswith("expected <block end>"):
        return problem_at, (
            "check the indentation: this line starts in a column that matches none of the"
            " mappings or lists above it (the keys of one mapping, and the '-' of one list,"
            " line up)"
        )
    if context.startswith("while parsing a flow") and context_at is not None:
        if "sequence" in context or "mapping" in context:
            bracket = "[" if "sequence" in context else "{"
        else:
            # "a flow node": PyYAML's words name no bracket, and its mark is where the node was
            # due (the end, for `routes: [`): the bracket still open there is the one to name.
            still_open = _open_bracket(lines, problem_at or context_at)
            if still_open is None:
                return problem_at or context_at, None
            context_at, bracket = still_open
        close = "]" if bracket == "[" else "}"
        if "<stream end>" in problem:
            return context_at, f"the '{bracket}' opened here is never closed with '{close}'"
        opened = f"line {context_at[0] + 1}, column {context_at[1] + 1}"
        return problem_at, (
            f"the items of the '{bracket}' opened at {opened} are separated by ', ' and it ends"
            f" with '{close}'"
        )
    if context.startswith("expected a single document"):
        return problem_at, "a config is one YAML document: remove the '---' and what follows it"
    if "could not determine a constructor for the tag" in problem:
        return problem_at, "YAML tags such as '!!python/...' are not accepted: remove the tag"
    if "found undefined alias" in problem:
        return problem_at, "an alias (*name) needs an anchor (&name) defined before it"
    return problem_at or context_at, None
