"""The front process's hot path: the lean HTTP/1.1 server that faces clients and the lean
pooled client that faces production, on uvloop and httptools. Nothing here imports aiohttp,
YAML, a metrics library, or parses a body."""
