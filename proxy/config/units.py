"""Scalar values of the config: durations, sizes and fractions parsed and formatted back, and
the typed checkers of single YAML values (names, URLs, listen addresses, counts, ...).

Owns: what one value may be and the error message when it is not. Must not touch: YAML nodes,
the error collector, whole sections, or any I/O (and asyncio, aiohttp, prometheus_client, redis,
sqlite).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Final, TypeVar
from urllib.parse import urlsplit

from proxy.core.comparison import OTHER_CLASS, class_label

# --- scalar parsers: public so the CLI and loadtest read units the same way -----------------

_DURATION_RE: Final = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(us|µs|ms|s|m|h|d)?\s*")
_DURATION_UNITS: Final = {
    "us": Decimal("0.000001"),
    "µs": Decimal("0.000001"),
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    None: Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
}
_DURATION_HINT: Final = "expected a duration like '2s', '500ms', '1.5s', '1m', '7d' or '250us'"

_SIZE_RE: Final = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-z]*)\s*", re.IGNORECASE)
_SIZE_UNITS: Final = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_SIZE_HINT: Final = "expected a size like '10MiB', '512KiB', '1GiB', '10MB' or '100B'"

_FRACTION_RE: Final = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(%?)\s*")
_FRACTION_HINT: Final = "expected a percentage like '30%' or a number between 0 and 1"


def parse_duration(value: object) -> float:
    """Seconds from "2s", "500ms", "1.5s", "1m", "1h", "7d", "250us" or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{_DURATION_HINT}, not a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"{_DURATION_HINT}; it must be finite")
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{_DURATION_HINT}, not {_kind(value)}")
    if value.strip().startswith("-"):
        raise ValueError("must not be negative")
    found = _DURATION_RE.fullmatch(value)
    if found is None:
        raise ValueError(_DURATION_HINT)
    # Decimal keeps "0.1s" and "100ms" the same float, which config_to_dict's round trip needs.
    return float(Decimal(found[1]) * _DURATION_UNITS[found[2]])


def parse_size(value: object) -> int:
    """Bytes from "10MiB", "512KiB", "1GiB", "10MB" (1000-based), "100B" or a bare integer."""
    if isinstance(value, bool):
        raise ValueError(f"{_SIZE_HINT}, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if not isinstance(value, str):
        raise ValueError(f"{_SIZE_HINT}, not {_kind(value)}")
    if value.strip().startswith("-"):
        raise ValueError("must not be negative")
    found = _SIZE_RE.fullmatch(value)
    if found is None or found[2].lower() not in _SIZE_UNITS:
        raise ValueError(_SIZE_HINT)
    size = Decimal(found[1]) * _SIZE_UNITS[found[2].lower()]
    if size != size.to_integral_value():
        raise ValueError("must be a whole number of bytes")
    return int(size)


def parse_fraction(value: object) -> float:
    """A share in [0, 1] from "30%", "12.5%" or a number such as 0.3."""
    if isinstance(value, bool):
        raise ValueError(f"{_FRACTION_HINT}, not a boolean")
    if isinstance(value, int | float):
        if not (math.isfinite(value) and 0 <= value <= 1):
            raise ValueError("must be between 0 and 1 (or 0% and 100%)")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{_FRACTION_HINT}, not {_kind(value)}")
    if value.strip().startswith("-"):
        raise ValueError("must be between 0% and 100%")
    found = _FRACTION_RE.fullmatch(value)
    if found is None:
        raise ValueError(_FRACTION_HINT)
    number = Decimal(found[1])
    if found[2]:
        if number > 100:
            raise ValueError("must be between 0% and 100%")
        return float(number / 100)
    if number > 1:
        raise ValueError("must be between 0 and 1 (write '30%' for a percentage)")
    return float(number)


# --- formatting back to human units, for config_to_dict --------------------------------------


def _decimal_text(number: Decimal) -> str:
    return format(number.normalize(), "f")


def _format_duration(seconds: float) -> str:
    exact = Decimal(repr(seconds))
    if exact >= 86400 and exact % 86400 == 0:
        return f"{_decimal_text(exact / 86400)}d"
    if exact >= 3600 and exact % 3600 == 0:
        return f"{_decimal_text(exact / 3600)}h"
    if exact >= 60 and exact % 60 == 0:
        return f"{_decimal_text(exact / 60)}m"
    if exact >= 1 or exact == 0:
        return f"{_decimal_text(exact)}s"
    for unit, factor in (("ms", 1000), ("us", 1_000_000)):
        scaled = exact * factor
        if scaled == scaled.to_integral_value():
            return f"{_decimal_text(scaled)}{unit}"
    return f"{_decimal_text(exact)}s"


def _format_size(size: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    for unit, factor in (("GB", 1000**3), ("MB", 1000**2), ("KB", 1000)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def _format_fraction(share: float) -> str:
    return f"{_decimal_text(Decimal(repr(share)) * 100)}%"


# --- value checkers: each takes the (substituted) YAML value, returns it typed, or raises
# ValueError with a message that does not repeat the value (the error line adds "(got ...)").


_E = TypeVar("_E", bound=Enum)


_TOKEN_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
_BEARER_RE: Final = re.compile(r"[-._~+/0-9A-Za-z]+=*")  # RFC 6750 b64token
_TARGET_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_LISTEN_RE: Final = re.compile(r"(?:\[([0-9A-Fa-f:.]+)\]|([^\s:\[\]/]+)):([0-9]{1,5})")
_LOG_LEVELS: Final = ("debug", "info", "warning", "error")


def _kind(value: object) -> str:
    kinds: list[tuple[type, str]] = [
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (list, "a list"),
        (dict, "a mapping"),
    ]
    if value is None:
        return "null"
    for cls, name in kinds:
        if isinstance(value, cls):
            return name
    return f"a {type(value).__name__}"


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, not {_kind(value)}")
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, not {_kind(value)}")
    return value


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, not {_kind(value)}")
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _at_most(limit: int, what: str) -> Callable[[object], int]:
    """A count with a ceiling: a bound is there to bound memory, connections or time, and an
    absurd one (10,000,000 connections in flight) bounds nothing. `what` says what it holds."""

    def parse(value: object) -> int:
        count = _count(value)
        if count > limit:
            raise ValueError(f"must be at most {limit:,} ({what})")
        return count

    return parse


# Ceilings of the config's bounds, each far above any sane setting.
_connections = _at_most(10_000, "connections to one upstream")
_in_flight = _at_most(10_000, "requests in flight to one shadow")
_queue = _at_most(1_000_000, "requests waiting in memory")
_records = _at_most(1_000_000_000, "records in the store")
_batch = _at_most(100_000, "items in one batch")
_points = _at_most(1_000_000, "history points in memory per shadow")


def _tolerance(value: object) -> float:
    """`compare.tolerance`: an absolute tolerance, in the target's units (never a share)."""
    if isinstance(value, str):
        if value.strip().endswith("%"):
            raise ValueError(
                "an absolute tolerance is a number in the target's units, not a share; for a"
                " share of production's value, set relative_tolerance"
            )
        # YAML 1.1 reads "1e-3" (no dot) as a string; take it as the number it plainly is.
        try:
            value = float(value)
        except ValueError:
            raise ValueError("expected a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, not {_kind(value)}")
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a finite number >= 0")
    return float(value)


_PERCENT_RE: Final = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*%\s*")
_RELATIVE_HINT: Final = "expected a share of production's value like '1%' or 0.01"


def _relative_tolerance(value: object) -> float:
    """`compare.relative_tolerance`: a share of production's value, written as fractions are
    ('1%', '0.5%', or 0.01). A share above 100% is allowed: it is a tolerance, not a rate."""
    if isinstance(value, str) and value.strip().endswith("%"):
        found = _PERCENT_RE.fullmatch(value)
        if found is None:
            raise ValueError(f"{_RELATIVE_HINT}; it must be >= 0")
        return float(Decimal(found[1]) / 100)
    try:
        return _tolerance(value)
    except ValueError as exc:
        raise ValueError(f"{_RELATIVE_HINT}; {exc}") from None


def _timeout(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be greater than 0")
    return seconds


def _body_cap(value: object) -> int:
    size = parse_size(value)
    if size < 1:
        raise ValueError("must be at least 1 byte")
    return size


def _choice(enum_type: type[_E]) -> Callable[[object], _E]:
    def check(value: object) -> _E:
        allowed = [member.value for member in enum_type]
        if isinstance(value, str):
            for member in enum_type:
                if member.value == value.lower():
                    return member
        raise ValueError(_one_of(value, allowed))

    return check


def _one_of(value: object, allowed: Sequence[str]) -> str:
    message = f"expected one of {', '.join(allowed)}"
    if isinstance(value, str):
        close = difflib.get_close_matches(value.lower(), allowed, n=1)
        if close:
            message = f"{message} (did you mean {close[0]!r}?)"
    return message


def _log_level(value: object) -> str:
    if isinstance(value, str) and value.lower() in _LOG_LEVELS:
        return value.lower()
    raise ValueError(_one_of(value, _LOG_LEVELS))


def _header(value: object) -> str:
    name = _text(value)
    if _TOKEN_RE.fullmatch(name) is None:
        raise ValueError("not a valid HTTP header name")
    return name


def _method(value: object) -> str:
    name = _text(value)
    if _TOKEN_RE.fullmatch(name) is None:
        raise ValueError("not a valid HTTP method")
    return name.upper()


def _listen(value: object) -> tuple[str, int]:
    hint = "expected 'host:port', like '0.0.0.0:8080' or '[::]:8080'"
    if not isinstance(value, str):
        raise ValueError(f"{hint}, not {_kind(value)}")
    found = _LISTEN_RE.fullmatch(value)
    if found is None:
        raise ValueError(hint)
    port = int(found[3])
    if port > 65535:
        raise ValueError("port must be between 0 and 65535")
    return found[1] or found[2], port


def _match(value: object) -> str:
    prefix = _text(value)
    if not prefix.startswith("/"):
        raise ValueError("must be a path prefix starting with '/'")
    if any(ch.isspace() or ch in "?#" for ch in prefix):
        raise ValueError("must be a plain path: no whitespace, query or fragment")
    if not prefix.isascii():
        # It may become an upstream request's path, which is sent as ASCII.
        raise ValueError("must be ASCII: percent-encode it, as clients send it")
    return prefix


def _target_name(value: object) -> str:
    name = _text(value)
    if _TARGET_NAME_RE.fullmatch(name) is None:
        raise ValueError("must be 1-64 characters of letters, digits, '_', '.' and '-'")
    return name


def _prediction_path(value: object) -> tuple[str, ...]:
    segments = tuple(_text(value).split("."))
    if not all(segments):
        raise ValueError("expected dot-separated keys like 'result.scores'")
    return segments


@dataclass(frozen=True, slots=True)
class _Url:
    url: str
    origin: str
    path: str


def _url(value: object) -> _Url:
    url = _text(value)
    if any(ch.isspace() for ch in url):
        raise ValueError("URL must not contain whitespace")
    if not url.isascii():
        raise ValueError(
            "URL must be ASCII: percent-encode its path, and write a non-ASCII host in its"
            " IDNA (xn--) form"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("URL must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("URL has no host")
    if "@" in parts.netloc:
        # The origin ends up in logs; credentials belong in headers, not in the config.
        raise ValueError("URL must not contain credentials")
    if port == 0:
        raise ValueError("URL port must be between 1 and 65535")
    if "?" in url or "#" in url:
        raise ValueError("upstream URL must not have a query or fragment")
    return _Url(url, f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/"))


def _disk_cap(value: object) -> int:
    size = parse_size(value)
    if size < 1024 * 1024:
        raise ValueError("must be at least 1MiB")
    return size


def _prometheus_url(value: object) -> str:
    found = _url(value)
    return found.origin + found.path


def _class_name(value: object) -> str:
    name = class_label(value)
    if name is None:
        raise ValueError(
            "expected a class: a string (1-100 characters), a finite number or a boolean"
        )
    if name == OTHER_CLASS:
        raise ValueError("'other' already names every class not listed; leave it out")
    return name


_STORE_BACKENDS: Final = ("sqlite", "redis")


def _redis_url(value: object) -> str:
    text = _text(value)
    if urlsplit(text).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("expected a URL like 'redis://host:6379/0', 'rediss://…' or 'unix://…'")
    return text


def _store_backend(value: object) -> str:
    if isinstance(value, str) and value.lower() in _STORE_BACKENDS:
        return value.lower()
    raise ValueError(_one_of(value, _STORE_BACKENDS))


def _alpha(value: object) -> float:
    alpha = parse_fraction(value)
    if not 0 < alpha < 0.5:
        raise ValueError("must be between 0 and 0.5, like 0.05 or '5%'")
    return alpha


def _effect_size(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number such as 0.1, not {_kind(value)}")
    if not (math.isfinite(value) and 0 < value <= 10):
        raise ValueError("must be above 0 and at most 10 (standard deviations), like 0.1")
    return float(value)


def _listen_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
