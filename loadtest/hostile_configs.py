"""Configs an attacker or an unlucky operator might reload: the benchmark's reload scenarios
write them over the proxy's config file under load and send SIGHUP.

Owns: the text of those configs (pure). Must not touch: files, signals, the proxy.

- ``yaml_bomb``: a YAML alias bomb inside an allowed key, ``compare.classes`` of the first
  route. A few hundred bytes of text: ``depth`` anchors, each a list of ``width`` aliases of
  the one before, ``width ** depth`` leaves once expanded (9 ** 9, 387 million, by default).
- ``padded_config``: the same valid config grown to exactly ``size`` bytes by a block of
  comment lines: reloading it changes nothing but costs parsing ``size`` bytes.
"""

from __future__ import annotations

import json
import string
from typing import Any

__all__ = ["padded_config", "yaml_bomb"]

_PLACEHOLDER = '"__classes__"'


def bomb_classes(depth: int = 9, width: int = 9) -> str:
    """The YAML flow sequence ``[&a [x, ...], &b [*a, ...], ...]``: each anchor is `width`
    aliases of the one before it, `depth` of them."""
    if not 1 <= depth <= len(string.ascii_lowercase):
        raise ValueError(f"depth must be in [1, 26], got {depth}")
    names = string.ascii_lowercase
    levels = ["&a [" + ", ".join(["x"] * width) + "]"]
    for level in range(1, depth):
        aliases = ", ".join([f"*{names[level - 1]}"] * width)
        levels.append(f"&{names[level]} [{aliases}]")
    return "[" + ", ".join(levels) + "]"


def yaml_bomb(config: dict[str, Any], depth: int = 9, width: int = 9) -> str:
    """`config` (a dict as bench.py writes it) as YAML text, its first route comparing
    classifications whose ``classes`` is the alias bomb."""
    doc = json.loads(json.dumps(config))
    doc["routes"][0]["compare"] = {"kind": "classification", "classes": "__classes__"}
    # JSON is YAML's flow style, and anchors and aliases are allowed in it.
    return json.dumps(doc, indent=2).replace(_PLACEHOLDER, bomb_classes(depth, width)) + "\n"


def padded_config(text: str, size: int) -> str:
    """`text` followed by comment lines, exactly `size` bytes (UTF-8) in all."""
    if not text.endswith("\n"):
        text += "\n"
    missing = size - len(text.encode())
    if missing < 0:
        raise ValueError(f"the config is already {len(text.encode())} bytes, over {size}")
    line = "# " + "padding " * 12 + "\n"
    whole, rest = divmod(missing, len(line))
    tail = "" if rest == 0 else ("#" + "p" * (rest - 2) + "\n" if rest >= 2 else "\n")
    return text + line * whole + tail
