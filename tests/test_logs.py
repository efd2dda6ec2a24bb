from __future__ import annotations

import logging

import orjson

from proxy.logs import JsonFormatter


def test_a_record_is_one_json_line_with_its_extra_fields() -> None:
    record = logging.makeLogRecord(
        {
            "name": "proxy.shadow",
            "levelname": "WARNING",
            "msg": "shadow %s failed",
            "args": ("iris-rf",),
            "created": 1_800_000_000.25,
            "msecs": 250.0,
            "shadow": "iris-rf",
        }
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert orjson.loads(line) == {
        "ts": "2027-01-15T08:00:00.250Z",
        "level": "warning",
        "logger": "proxy.shadow",
        "msg": "shadow iris-rf failed",
        "shadow": "iris-rf",
    }


def test_exceptions_are_kept_in_the_same_line() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.LogRecord("proxy", logging.ERROR, __file__, 1, "boom", (), None)
        record.exc_info = __import__("sys").exc_info()
    doc = orjson.loads(JsonFormatter().format(record))
    assert doc["msg"] == "boom"
    assert doc["exc"].endswith("ValueError: bad")
