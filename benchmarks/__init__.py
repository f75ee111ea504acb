"""Benchmarks of forkserve against other ASGI servers; see benchmarks/README.md."""
