"""The reliability suite: crashes, faults, bad input and overload, with nothing lost.

Each ``test_*.py`` module is one scenario of issue 8. Its engine is a plain
function (``run_*``) that the CI test calls at a small size and
``python -m benchmarks.soak`` calls at a large one; every engine ends with the
oracle (:class:`trio_ingest.testing.Oracle`): lost ids, duplicate rows, unexpected ids and the
accounting invariant.
"""
