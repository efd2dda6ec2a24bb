"""A command's output to a terminal or a pipe: it ends quietly when the reader goes (`| head`),
with the command's own exit status, never a BrokenPipeError traceback."""

from __future__ import annotations

import os
import sys


def quiet_stdout() -> None:
    """The reader of stdout went away (`| head -1`): send what is left to /dev/null, so that
    neither this write nor the flush at exit ends in a BrokenPipeError traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def emit(text: str, code: int) -> int:
    """Print `text` and return `code`, the command's exit status, also when the reader stops
    early: `check-config ok.yaml | head -1` still says 0 (valid), even under `set -o pipefail`,
    where a SIGPIPE death (141) would fail the pipeline for a valid config."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_stdout()
    return code
