"""The pure core: routing, sampling, prediction extraction and comparison, scoring, statistics
and typed outcomes. Plain data in, plain data out: no asyncio, no sockets, no metrics, no store."""
