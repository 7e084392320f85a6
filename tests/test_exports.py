"""The public surface: exactly what __all__ says, each name importable."""

from fresh import fresh_python

import trio_ingest as ti


def test_all_names_exist_and_are_public() -> None:
    for name in ti.__all__:
        assert hasattr(ti, name), name
    import types

    # subpackages show up as attributes once imported; every other name is listed
    exported = {
        n
        for n in dir(ti)
        if not n.startswith("_") and not isinstance(getattr(ti, n), types.ModuleType)
    }
    assert exported - set(ti.__all__) == set()


def test_subpackages_export_what_they_list() -> None:
    for module in (ti.sources, ti.sinks, ti.stages, ti.state, ti.observe, ti.testing):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_contract_names() -> None:
    for name in (
        "Event",
        "Pipeline",
        "Graph",
        "RetryPolicy",
        "ExponentialBackoff",
        "ConstantBackoff",
        "Sink",
        "TransientError",
        "RunReport",
        "map",
        "filter",
        "flat_map",
        "map_batch",
        "batch",
        "key_by",
        "inspect",
        "join_latest",
        "tap",
        "map_event",
    ):
        assert name in ti.__all__
    assert callable(ti.sources.from_iterable)
    assert ti.sinks.Memory().events == []
    ti.Sink()  # no required arguments


def test_the_test_kit_is_imported_on_first_use() -> None:
    # `import trio_ingest` (every command, every app) does not pay for trio.testing and
    # pytest; `ti.testing` and `from trio_ingest import testing` still work
    out = fresh_python(
        """
        import sys, trio_ingest as ti
        kit = ("trio_ingest.testing", "trio.testing", "pytest")
        print(sorted(m for m in kit if m in sys.modules))
        print(ti.testing.Oracle.__name__)
        from trio_ingest import testing
        print(testing is ti.testing)
        try:
            ti.no_such_name
        except AttributeError as e:
            print(e)
        """
    )
    assert out == [
        "[]",
        "Oracle",
        "True",
        "module 'trio_ingest' has no attribute 'no_such_name'",
    ]
