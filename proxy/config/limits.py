"""The caps on a config: its size in bytes, its YAML aliases, nodes and nesting, enforced while
the YAML is composed, so that an alias bomb is refused before it expands and deep nesting
before it recurses.

Owns: the limits and the loader that counts against them. Must not touch: what the document
means (load.py), or any I/O (and asyncio, aiohttp, prometheus_client, redis, sqlite).

    >>> loader = _BoundedLoader("[&a [x, x], *a, *a]", "c.yaml")
    >>> loader.get_single_node().value[1].value[0].value, loader.nodes
    ('x', 10)
"""

from __future__ import annotations

from typing import Final, NoReturn

import yaml

from proxy.config.model import ConfigError

MAX_CONFIG_BYTES: Final = 1024**2
"""A config file above this many bytes is refused before it is parsed."""
MAX_YAML_ALIASES: Final = 100
"""Aliases (``*name``, and ``<<: *name`` merges) a config may use."""
MAX_YAML_NODES: Final = 100_000
"""Scalars, lists and mappings, counted as if every alias were replaced by what it names."""
MAX_YAML_DEPTH: Final = 64
"""Lists and mappings nested in one another (a scalar adds no level)."""


def too_big(source: str, size: int | None) -> ConfigError:
    """The error of a config over MAX_CONFIG_BYTES (``size`` None: a stream, size unknown)."""
    shown = f"more than {MAX_CONFIG_BYTES}" if size is None else str(size)
    return ConfigError(
        [f"{source}: the config is {shown} bytes; at most {MAX_CONFIG_BYTES} are accepted"]
    )


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a document over the alias, node or depth caps as it is
    composed: composing shares an aliased node rather than copying it, so it is counted here by
    the size of what it names; everything after (construction, the checks, an error's repr)
    walks the document as if expanded."""

    def __init__(self, text: str, source: str) -> None:
        super().__init__(text)
        self.source = source
        self.aliases = 0
        self.nodes = 0  # nodes composed so far, each alias counting the nodes it names
        self._depth = 0
        self._sizes: dict[str, int] = {}  # the expanded size of each anchored node

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.NodeEvent = self.peek_event()  # type: ignore[no-untyped-call]  # untyped stub
        if isinstance(event, yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                self._refuse(
                    event,
                    f"the config has more than {MAX_YAML_ALIASES} YAML aliases; at most "
                    f"{MAX_YAML_ALIASES} are accepted",
                )
            node = super().compose_node(parent, index)
            # Not sized yet: an alias inside the node it names (a cycle), counted once.
            self._count(event, self._sizes.get(event.anchor or "", 1))
            return node
        collection = isinstance(event, yaml.CollectionStartEvent)
        if collection and self._depth >= MAX_YAML_DEPTH:
            self._refuse(
                event,
                f"the config nests more than {MAX_YAML_DEPTH} levels deep; at most "
                f"{MAX_YAML_DEPTH} are accepted",
            )
        before = self.nodes
        self._depth += collection
        node = super().compose_node(parent, index)
        self._depth -= collection
        self._count(event, 1)
        if event.anchor is not None:
            self._sizes[event.anchor] = self.nodes - before
        return node

    def _count(self, event: yaml.Event, nodes: int) -> None:
        self.nodes += nodes
        if self.nodes > MAX_YAML_NODES:
            self._refuse(
                event,
                f"the config has more than {MAX_YAML_NODES} YAML nodes once its aliases are "
                f"expanded; at most {MAX_YAML_NODES} are accepted",
            )

    def _refuse(self, event: yaml.Event, what: str) -> NoReturn:
        where = "" if event.start_mark is None else f":{event.start_mark.line + 1}"
        raise ConfigError([f"{self.source}{where}: {what}"])
