"""nginx's ``mirror`` as a benchmark scenario: the yardstick a tee must beat. The generated
config (pure), where the binary is, and the command line that runs it.

Owns: nginx's config and invocation. Must not touch: the load, the backends, the figures.

The config is what an operator would write for a fair fight against the proxy: production
behind an upstream keep-alive pool, each request mirrored to the shadow (body included) by an
internal location with a keep-alive pool of its own; no access log; client and upstream
connections kept for as many requests as they like (the proxy never closes them either). nginx
runs in the foreground as the current user, with its master process and ``workers`` worker
processes (1 by default in the benchmark: one process serving, as the proxy's one front
process does). Every path it writes is under the prefix directory (``-p``).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
from pathlib import Path

__all__ = ["command", "current_user", "find_nginx", "nginx_config"]

# Debian puts nginx in /usr/sbin, which is not on every user's PATH.
_SBIN = "/usr/sbin:/sbin:/usr/local/sbin"


def find_nginx(explicit: str | None = None) -> str | None:
    """The nginx binary: `explicit` if it is an executable file, else nginx on PATH or in sbin."""
    if explicit is not None:
        return explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else None
    return shutil.which("nginx") or shutil.which("nginx", path=_SBIN)


def current_user() -> tuple[str, str] | None:
    """(user, group) to name in `user` when running as root, so that the workers stay this
    user instead of nginx's default `nobody`; None otherwise (the directive would be ignored)."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name


def nginx_config(
    *,
    port: int,
    production_port: int,
    shadow_port: int,
    workers: int | str = 1,
    user: tuple[str, str] | None = None,
) -> str:
    """nginx.conf: listen on 127.0.0.1:`port`, proxy to production, mirror to the shadow.

    `workers` is a count or "auto" (one per core). Relative paths are under nginx's prefix.
    """
    user_line = f"user {user[0]} {user[1]};\n" if user else ""
    return f"""\
{user_line}worker_processes {workers};
pid nginx.pid;
error_log nginx-error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    client_body_temp_path tmp/client_body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;

    upstream production {{
        server 127.0.0.1:{production_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}

    upstream shadow {{
        server 127.0.0.1:{shadow_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}

    server {{
        listen 127.0.0.1:{port};

        location = /readyz {{
            return 200 "ok\\n";
        }}

        location / {{
            mirror /mirror;
            mirror_request_body on;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://production;
        }}

        location = /mirror {{
            internal;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://shadow$request_uri;
        }}
    }}
}}
"""


def command(nginx: str, prefix: Path) -> list[str]:
    """Run nginx in the foreground on `prefix`/nginx.conf; errors before the config is read go
    to `prefix`/nginx-error.log too."""
    return [
        nginx,
        "-p",
        f"{prefix}/",
        "-c",
        str(prefix / "nginx.conf"),
        "-e",
        str(prefix / "nginx-error.log"),
        "-g",
        "daemon off;",
    ]
