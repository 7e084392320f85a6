"""ti.validate: msgspec Structs, pydantic models and JSON Schema dicts, one error form."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_ingest as ti
from trio_ingest.testing import assert_accounted


class Item(msgspec.Struct):
    price: float
    name: str = ""


class Order(msgspec.Struct):
    id: int
    items: list[Item]


class PItem(pydantic.BaseModel):
    price: float
    name: str = ""


class POrder(pydantic.BaseModel):
    id: int
    items: list[PItem]


ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "items"],
    "properties": {
        "id": {"type": "integer"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["price"],
                "properties": {"price": {"type": "number"}, "name": {"type": "string"}},
            },
        },
    },
}

SCHEMAS: dict[str, Any] = {"msgspec": Order, "pydantic": POrder, "jsonschema": ORDER_SCHEMA}

GOOD = {"id": 1, "items": [{"price": 1.5, "name": "a"}, {"price": 2}]}
BAD_PRICE = {"id": 2, "items": [{"price": 1}, {"price": 2}, {"price": 3}, {"price": "12,5"}]}
MISSING = {"id": 3, "items": [{"name": "no price"}]}


async def run(schema: Any, payloads: list[Any], **options: Any) -> tuple[ti.sinks.Memory, Any]:
    sink, dead = ti.sinks.Memory(), ti.sinks.Memory()
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(payloads),
        ti.validate(schema, **options),
        sink=sink,
        dead_letter=dead,
    )
    report = await pipeline.run()
    assert_accounted(report)
    return sink, dead


@pytest.mark.anyio
@pytest.mark.parametrize("kind", list(SCHEMAS))
async def test_invalid_payloads_are_dead_lettered_with_path_and_reason(kind: str) -> None:
    sink, dead = await run(SCHEMAS[kind], [GOOD, BAD_PRICE, MISSING], convert=False)
    assert [e.payload for e in sink.events] == [GOOD]
    letters = dead.dead_letters
    assert [lt["event"]["payload"] for lt in letters] == [BAD_PRICE, MISSING]
    assert all(lt["error_type"] == "trio_ingest._errors.InvalidPayloadError" for lt in letters)
    assert all(lt["node"] == "validate" for lt in letters)
    bad, missing = (lt["error"] for lt in letters)
    # the same path form whichever the library; the reason quotes the value it got
    assert bad.startswith('$.items[3].price: ')
    assert bad.endswith('got "12,5"')
    assert missing == "$.items[0].price: required field missing"


def test_reasons_read_alike() -> None:
    async def reasons(kind: str) -> str:
        _, dead = await run(SCHEMAS[kind], [BAD_PRICE])
        return str(dead.dead_letters[0]["error"])

    assert anyio.run(reasons, "msgspec") == '$.items[3].price: expected float, got "12,5"'
    assert anyio.run(reasons, "jsonschema") == '$.items[3].price: expected number, got "12,5"'
    assert anyio.run(reasons, "pydantic") == (
        "$.items[3].price: input should be a valid number, unable to parse string as a "
        'number, got "12,5"'
    )


@pytest.mark.anyio
async def test_convert_gives_the_typed_value() -> None:
    sink, _ = await run(Order, [GOOD])
    assert sink.events[0].payload == Order(1, [Item(1.5, "a"), Item(2.0)])
    sink, _ = await run(POrder, [GOOD])
    assert sink.events[0].payload == POrder.model_validate(GOOD)
    sink, _ = await run(ORDER_SCHEMA, [GOOD])  # a JSON Schema keeps the dict
    assert sink.events[0].payload == GOOD


@pytest.mark.anyio
async def test_the_event_keeps_its_id() -> None:
    sink, dead = await run(Order, [ti.Event("a", GOOD), ti.Event("b", MISSING)])
    assert [e.id for e in sink.events] == ["a"]
    assert [lt["event"]["id"] for lt in dead.dead_letters] == ["b"]


def test_not_a_payload_at_all() -> None:
    async def main() -> list[str]:
        out = []
        for schema in SCHEMAS.values():
            _, dead = await run(schema, [[1, 2]])
            out.append(str(dead.dead_letters[0]["error"]))
        return out

    msgspec_reason, pydantic_reason, jsonschema_reason = anyio.run(main)
    assert msgspec_reason == "$: expected object, got [1,2]"
    assert pydantic_reason.startswith("$: input should be a valid dictionary")
    assert jsonschema_reason == "$: expected object, got [1,2]"


def test_bad_schemas_are_config_errors() -> None:
    with pytest.raises(ti.ConfigError, match="'schema' must be"):
        ti.validate(int)
    with pytest.raises(ti.ConfigError, match="'schema' is not a valid JSON Schema"):
        ti.validate({"type": 12})


def test_without_a_dead_letter_sink_the_run_fails_loudly() -> None:
    pipeline = ti.Pipeline(
        ti.sources.from_iterable([MISSING]), ti.validate(Order), sink=ti.sinks.Memory()
    )
    with pytest.raises(ti.StageError, match=r"\$\.items\[0\]\.price: required field missing"):
        anyio.run(pipeline.run)


scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False)
json_values = st.recursive(
    scalars | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
items = st.fixed_dictionaries(
    {}, optional={"price": st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                                      st.integers(-9, 9), st.text(max_size=3)),
                  "name": st.text(max_size=3) | st.integers()},
)
orders = st.fixed_dictionaries(
    {},
    optional={"id": st.integers(-9, 9) | st.text(max_size=2), "items": st.lists(items, max_size=3)},
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payloads=st.lists(orders | json_values, max_size=30),
    kind=st.sampled_from(list(SCHEMAS)),
    backend=st.sampled_from(["trio", "asyncio"]),
)
def test_every_payload_passes_or_is_dead_lettered(
    payloads: list[Any], kind: str, backend: str
) -> None:
    sink, dead = anyio.run(run, SCHEMAS[kind], payloads, backend=backend)
    assert len(sink.events) + len(dead.events) == len(payloads)
    assert all(str(lt["error"]).startswith("$") for lt in dead.dead_letters)
    # the libraries agree on what is valid (strictly typed: no lax coercion in JSON Schema)
    if kind == "jsonschema":
        for e in sink.events:
            assert isinstance(e.payload, dict)
