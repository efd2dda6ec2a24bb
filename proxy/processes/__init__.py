"""The processes of a running proxy, each wired in one place: the front, the analysis, and
both in one event loop (for tests and development)."""
