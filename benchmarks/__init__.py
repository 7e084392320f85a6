"""The trio_ingest benchmark suite: ``python -m benchmarks [--quick] [--out DIR] [--only ...]``.

Baselines measured in the same run: a plain Python loop (the ceiling), raw Trio
memory channels (one event per send, and lists of 256), an asyncio.Queue chain,
the tutorial design this project started from, and the peers slurry, aiostream
and bytewax when installed. See ``benchmarks/results/results.md`` for figures.
"""
