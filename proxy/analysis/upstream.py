"""One pooled HTTP client per upstream target, with its own connection limit and timeouts;
aiohttp's errors become ours here, at the boundary."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from proxy.core.outcomes import Outcome

# Headers aiohttp would add on its own. Skipping them forwards exactly what the client sent:
# an added Accept-Encoding would make production compress answers the client never asked for.
_SKIP_AUTO_HEADERS = frozenset({"Accept", "Accept-Encoding", "User-Agent", "Content-Type"})


class UpstreamError(Exception):
    """The upstream gave no usable answer. `outcome` is the metric label for it."""

    outcome = Outcome.CONNECT_ERROR


class UpstreamTimeout(UpstreamError):
    outcome = Outcome.TIMEOUT


class UpstreamConnectError(UpstreamError):
    outcome = Outcome.CONNECT_ERROR


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    body: bytes


class Upstream:
    """A keep-alive pool to one target. Requests go to `origin + path + suffix`.

    >>> upstream = Upstream("http://iris:8080", "/v2/models/iris/infer", timeout=2.0)
    >>> await upstream.start()
    >>> answer = await upstream.send("POST", "?x=1", headers, body)
    >>> await upstream.close()
    """

    def __init__(
        self,
        origin: str,
        path: str,
        *,
        timeout: float,
        connect_timeout: float = 1.0,
        max_connections: int = 256,
    ) -> None:
        self.base = origin + path
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            ttl_dns_cache=10,
            enable_cleanup_closed=False,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            # Answers are passed on as production sent them; shadows' are decoded when parsed.
            auto_decompress=False,
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            cookie_jar=aiohttp.DummyCookieJar(),
            # Forwarded bodies and headers are the client's; aiohttp must not reinterpret them.
            requote_redirect_url=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self, method: str, suffix: str, headers: CIMultiDict[str], body: bytes
    ) -> UpstreamResponse:
        """Send one request and read the whole answer. Raises UpstreamTimeout or
        UpstreamConnectError when there is no answer."""
        assert self._session is not None, "Upstream.start() was not awaited"
        try:
            async with self._session.request(
                method,
                URL(self.base + suffix, encoded=True),
                headers=headers,
                data=body or None,
                allow_redirects=False,
            ) as resp:
                payload = await resp.read()
                return UpstreamResponse(resp.status, resp.reason or "", resp.headers, payload)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"no answer from {self.base} in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamConnectError(f"{self.base}: {exc.__class__.__name__}: {exc}") from exc
