"""Validating a config in a child process under time and memory limits, and its pickled Config."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import pickle
import resource
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Final, NoReturn

from proxy.config import Config, ConfigError, load_config

DEFAULT_TIME_LIMIT: Final = 10.0
"""Seconds a validation may take, the child's start-up included."""
DEFAULT_MEMORY_LIMIT: Final = 512 * 2**20
"""Bytes of address space the child may map (RLIMIT_AS), its interpreter and imports included."""

EXIT_INVALID: Final = 2
"""The child's exit status for an invalid config; its errors are a JSON list on stdout."""
EXIT_MEMORY: Final = 3
"""The child's exit status when it ran out of memory under its limit."""
EXIT_USAGE: Final = 64

# The validator does no numeric work, and OpenBLAS maps about 80 MiB of address space per
# thread it starts on import (numpy, through the comparators): one thread keeps the child's
# start-up far below its memory limit however many cores the machine has.
_CHILD_ENV: Final = {"OPENBLAS_NUM_THREADS": "1"}


def validate_in_child(
    path: str,
    out: str,
    *,
    time_limit: float = DEFAULT_TIME_LIMIT,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
) -> Config:
    """Validate the config file at ``path`` in a child process, which leaves the Config pickled
    at ``out``; return it. Blocks: for start-up, before any event loop runs.

    Raises ConfigError: the config's errors, or the limit the validation went over.

    >>> config = validate_in_child("/etc/shadow-proxy/config.yaml", "/run/sp/config.pickle")
    """
    try:
        done = subprocess.run(
            _command(path, out, time_limit, memory_limit),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=time_limit,
            env=_env(),
            check=False,
        )  # run() kills the child on the timeout
    except subprocess.TimeoutExpired:
        _discard_partial(out)
        raise _timed_out(path, time_limit) from None
    except OSError as exc:  # no process could be started (fork's EAGAIN, ENOMEM)
        raise _cannot_start(path, exc) from None
    _check_outcome(path, out, done.returncode, done.stdout, done.stderr, time_limit, memory_limit)
    return load_pickled(out)


async def validate_in_child_async(
    path: str,
    out: str,
    *,
    time_limit: float = DEFAULT_TIME_LIMIT,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
) -> Config:
    """validate_in_child for a running event loop, which it never blocks: the child runs apart,
    and is killed on the timeout or if this is cancelled.

    >>> config = await validate_in_child_async(state.config.source, pickle_path)
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *_command(path, out, time_limit, memory_limit),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_env(),
        )
    except OSError as exc:
        raise _cannot_start(path, exc) from None
    try:
        async with asyncio.timeout(time_limit):
            stdout, stderr = await proc.communicate()
    except TimeoutError:
        raise _timed_out(path, time_limit) from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
            _discard_partial(out)
    assert proc.returncode is not None  # communicate() returned: the child was reaped
    _check_outcome(path, out, proc.returncode, stdout, stderr, time_limit, memory_limit)
    return await asyncio.to_thread(load_pickled, out)


def load_pickled(path: str) -> Config:
    """The Config a validation child pickled at ``path``; ConfigError if there is none.

    Only for a file this proxy's validator wrote (a private runtime directory, mode 0600):
    unpickling runs code named by the file.
    """
    try:
        with open(path, "rb") as file:
            config = pickle.load(file)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError) as exc:
        raise ConfigError([f"{path}: cannot load the validated config: {exc}"]) from None
    if not isinstance(config, Config):
        raise ConfigError([f"{path}: holds a {type(config).__name__}, not a validated config"])
    return config


# -- the parent's side --------------------------------------------------------------------------


def _command(path: str, out: str, timeout: float, memory: int) -> list[str]:
    # CPU seconds: whole ones, at least the wall-clock timeout, so that a child spinning where
    # the parent cannot see (the sync parent blocked, say) still ends.
    cpu = max(1, math.ceil(timeout))
    return [
        *(sys.executable, "-m", "proxy.validation", path, out),
        *("--memory", str(memory), "--cpu-seconds", str(cpu)),
    ]


def _env() -> dict[str, str]:
    return {**os.environ, **_CHILD_ENV}


def _timed_out(path: str, timeout: float) -> ConfigError:
    return ConfigError([f"{path}: validating the config took longer than {timeout} s; refused"])


def _cannot_start(path: str, exc: OSError) -> ConfigError:
    return ConfigError([f"{path}: cannot start the config validator: {exc.strerror or exc}"])


def _out_of_memory(path: str, memory: int) -> ConfigError:
    return ConfigError(
        [
            f"{path}: validating the config needed more than {memory} bytes of memory "
            f"({memory / 2**20:g} MiB); refused"
        ]
    )


def _check_outcome(
    path: str,
    out: str,
    status: int,
    stdout: bytes,
    stderr: bytes,
    timeout: float,
    memory: int,
) -> None:
    """Raise the ConfigError the child's exit status and output stand for; return if it wrote
    the config."""
    if status == 0:
        return
    _discard_partial(out)
    if status == EXIT_INVALID:
        try:
            errors = json.loads(stdout)
        except ValueError:
            errors = None
        if isinstance(errors, list) and errors and all(isinstance(e, str) for e in errors):
            raise ConfigError(errors)
    if status == EXIT_MEMORY or status == -signal.SIGKILL:  # SIGKILL not ours: the OOM killer
        raise _out_of_memory(path, memory)
    if status == -signal.SIGXCPU:  # its CPU limit, ceil(timeout) seconds, was reached
        raise _timed_out(path, timeout)
    what = f"signal {-status}" if status < 0 else f"status {status}"
    last = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
    raise ConfigError(
        [f"{path}: the config validator exited with {what} ({last[0][:200]}); refused"]
    )


def _partial(out: str) -> str:
    """Where the child writes the pickle before renaming it to ``out``."""
    return f"{out}.partial"


def _discard_partial(out: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(_partial(out))


# -- the child's side ---------------------------------------------------------------------------


class _Arguments(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # Not argparse's status 2, which means an invalid config here.
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """The child: ``python -m proxy.validation PATH OUT [--memory BYTES] [--cpu-seconds S]``.
    Exit 0 with the Config pickled at OUT, EXIT_INVALID with the errors as a JSON list on
    stdout, or EXIT_MEMORY."""
    parser = _Arguments(prog="python -m proxy.validation", description=main.__doc__)
    parser.add_argument("path", help="the config file")
    parser.add_argument("out", help="where the validated Config is pickled")
    parser.add_argument("--memory", type=int, default=DEFAULT_MEMORY_LIMIT, help="RLIMIT_AS, bytes")
    parser.add_argument("--cpu-seconds", type=int, default=math.ceil(DEFAULT_TIME_LIMIT))
    args = parser.parse_args(argv)
    # Limits set once the interpreter has started and imported what it needs: they bound the
    # work on the file. Hard limits too, so that nothing in the file's handling can raise them.
    resource.setrlimit(resource.RLIMIT_AS, (args.memory, args.memory))
    resource.setrlimit(resource.RLIMIT_CPU, (args.cpu_seconds, args.cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGXCPU would dump one
    # Never urgent: on a busy machine, production's processes get the CPU first.
    os.nice(10)
    try:
        try:
            config = load_config(args.path)
        except ConfigError as exc:
            print(json.dumps(list(exc.errors)))
            return EXIT_INVALID
        _write_atomically(args.out, pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL))
    except MemoryError:
        os._exit(EXIT_MEMORY)  # at once: unwinding and shutting down allocate too
    return 0


def _write_atomically(out: str, data: bytes) -> None:
    """``data`` at ``out``, mode 0600 (the config holds tokens); a reader sees the whole file or
    the one it replaces."""
    partial = _partial(out)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(partial)  # left by a child killed while writing; O_EXCL below
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(partial, out)


if __name__ == "__main__":
    sys.exit(main())
