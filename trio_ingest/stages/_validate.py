"""``validate(schema)``: payloads that match a schema pass, the others are dead-lettered.

Three kinds of schema, one error form. A msgspec ``Struct`` type, a pydantic model or
a JSON Schema dict; whichever it is, a payload that does not match is dead-lettered
with an :class:`~trio_ingest.InvalidPayloadError` whose message is the field path in
JSONPath form and the reason, ``$.items[3].price: expected float, got "12,5"``.

The libraries are optional: a ``Struct`` or a pydantic model means the library is
imported already; a JSON Schema dict needs ``jsonschema`` (the ``jsonschema`` extra).
Invalid data is not retried (retrying cannot fix it).
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._batch import Batch
from .._errors import ConfigError, InvalidPayloadError
from .._json import dumps_text
from ._context import StageContext, StatsLike
from ._operators import Operator, StepResult, _without, apply_each

__all__ = ("Validate", "validate")

#: A reason quotes at most this much of the offending value.
_VALUE_CHARS = 60
_MSGSPEC_AT = re.compile(r"^(?P<reason>.*?)(?: - at `(?P<path>\$.*)`)?$", re.DOTALL)
_MSGSPEC_MISSING = re.compile(r"^Object missing required field `(?P<field>.+)`$")
_MSGSPEC_EXPECTED = re.compile(r"^Expected `(?P<want>[^`]+)`, got `[^`]+`(?P<rest>.*)$")
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def path_of(parts: Sequence[Any]) -> str:
    """``("items", 3, "price")`` as ``$.items[3].price``."""
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _parts_of(path: str) -> list[Any]:
    return [name if name else int(index) for name, index in _PATH_PART.findall(path[1:])]


def _at(payload: Any, parts: Sequence[Any]) -> Any:
    for part in parts:
        try:
            payload = payload[part]
        except (LookupError, TypeError):
            return None
    return payload


def shown(value: Any) -> str:
    """``value`` as JSON, cut short: how a reason quotes what it got."""
    try:
        text = dumps_text(value)
    except Exception:  # noqa: BLE001 -- a value JSON has no form for is shown by repr
        text = repr(value)
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 3] + "..."


# -- each library's error, in the one form ---------------------------------------


def _msgspec_error(payload: Any, error: Exception) -> InvalidPayloadError:
    match = _MSGSPEC_AT.match(str(error))
    assert match is not None  # the pattern matches any text
    reason, path = match["reason"], match["path"] or "$"
    parts = _parts_of(path)
    if missing := _MSGSPEC_MISSING.match(reason):
        return InvalidPayloadError(path_of([*parts, missing["field"]]), "required field missing")
    if expected := _MSGSPEC_EXPECTED.match(reason):
        got = shown(_at(payload, parts))
        want, rest = expected["want"], expected["rest"]
        return InvalidPayloadError(path, f"expected {want}, got {got}{rest}")
    return InvalidPayloadError(path, reason[:1].lower() + reason[1:])


def _pydantic_error(payload: Any, error: Exception) -> InvalidPayloadError:
    errors = error.errors(include_url=False)  # type: ignore[attr-defined]
    first = errors[0]
    path = path_of(first["loc"])
    if first["type"] == "missing":
        return InvalidPayloadError(path, "required field missing")
    message = str(first["msg"])
    reason = message[:1].lower() + message[1:]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return InvalidPayloadError(path, f"{reason}, got {shown(first.get('input'))}{more}")


def _jsonschema_error(error: Any) -> InvalidPayloadError:
    parts = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, Mapping):
        names = [n for n in error.validator_value if n not in error.instance]
        if names:
            return InvalidPayloadError(path_of([*parts, names[0]]), "required field missing")
    if error.validator == "type":
        want = error.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return InvalidPayloadError(path_of(parts), f"expected {want}, got {shown(error.instance)}")
    return InvalidPayloadError(path_of(parts), str(error.message))


def _other_error(error: Exception) -> InvalidPayloadError:
    return InvalidPayloadError("$", f"{type(error).__name__}: {error}")


# -- the checkers -------------------------------------------------------------------


def _json_schema_checker(schema: Mapping[str, Any]) -> Callable[[Any], Any]:
    try:
        import jsonschema  # type: ignore[import-untyped,unused-ignore]  # optional dependency
    except ImportError:
        raise ImportError(
            "ti.validate with a JSON Schema dict needs the jsonschema package: "
            "pip install 'trio-ingest[jsonschema]'"
        ) from None
    kind = jsonschema.validators.validator_for(schema)
    try:
        kind.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigError(f"'schema' is not a valid JSON Schema: {exc.message}") from None
    checker = kind(schema)
    is_valid, errors_of = checker.is_valid, checker.iter_errors
    best_match = jsonschema.exceptions.best_match

    def check(payload: Any) -> Any:
        if not is_valid(payload):
            raise _jsonschema_error(best_match(errors_of(payload)))
        return payload

    return check


class Validate(Operator):
    """The ``validate`` stage: a per-event check whose failures carry a path and a reason."""

    kind = "validate"

    def __init__(self, schema: Any, *, convert: bool = True, name: str | None = None) -> None:
        self.schema = schema
        self.convert = bool(convert)
        explain: Callable[[Any, Exception], InvalidPayloadError]
        msgspec = sys.modules.get("msgspec")
        pydantic = sys.modules.get("pydantic")
        many: Callable[[list[Any]], list[Any]] | None = None
        if isinstance(schema, Mapping):
            check = _json_schema_checker(schema)
            self.convert = False  # a JSON Schema describes dicts: nothing to convert to
            expected: tuple[type[Exception], ...] = (InvalidPayloadError,)

            def explain(payload: Any, error: Exception) -> InvalidPayloadError:
                return error if isinstance(error, InvalidPayloadError) else _other_error(error)
        elif (
            msgspec is not None and isinstance(schema, type) and issubclass(schema, msgspec.Struct)
        ):
            check = functools.partial(msgspec.convert, type=schema)
            expected = (msgspec.ValidationError,)
            explain = _msgspec_error
            # the whole batch in one call (C all the way); per event only when one fails
            many = functools.partial(msgspec.convert, type=list[schema])
        elif (
            pydantic is not None
            and isinstance(schema, type)
            and issubclass(schema, pydantic.BaseModel)
        ):
            check = schema.model_validate  # type: ignore[attr-defined]
            expected = (pydantic.ValidationError,)
            explain = _pydantic_error
        else:
            raise ConfigError(
                "'schema' must be a msgspec Struct type, a pydantic model or a JSON Schema "
                f"dict: {schema!r}"
            )
        super().__init__(check, name=name if name is not None else "validate")
        self.name_given = name is not None
        self._expected = expected
        self._explain = explain
        self._many = many

    async def results(
        self, ctx: StageContext, stats: StatsLike, batch: Batch
    ) -> tuple[list[Any], set[int]]:
        """Check every payload; dead-letter the invalid ones with their path and reason."""
        payloads = batch.payloads
        if self._many is not None:
            try:
                return self._many(payloads), set()
            except self._expected:
                pass  # find which, one by one
        results, failures = apply_each(self.call, payloads)
        if not failures:
            return results, set()
        expected, explain = self._expected, self._explain
        dead = [i for i, _ in failures]
        errors: list[tuple[Exception, int]] = [
            (explain(payloads[i], exc) if isinstance(exc, expected) else _other_error(exc), 1)
            for i, exc in failures
        ]
        stats.errors += len(failures)
        await ctx.dead_letter(stats, batch, dead, errors)
        return results, set(dead)

    def assemble(self, batch: Batch, results: list[Any], dead: set[int]) -> StepResult:
        out = Batch(batch.events, results if self.convert else batch.payloads, batch.tokens)
        return StepResult(_without(out, dead))


def validate(schema: Any, *, convert: bool = True, name: str | None = None) -> Validate:
    """Pass the payloads that match ``schema``; dead-letter the others with path and reason.

    Args:
        schema: A msgspec ``Struct`` type, a pydantic model class, or a JSON Schema dict.
        convert: With a type, pass on the converted value (the Struct or model
            instance); False keeps the payload as it came (a dict). A JSON Schema
            always keeps it.
        name: Node name (default ``validate``).

    Raises:
        ConfigError: ``schema`` is none of the three kinds, or an invalid JSON Schema.
        ImportError: A JSON Schema dict, and ``jsonschema`` is not installed (the
            message names the extra).
    """
    return Validate(schema, convert=convert, name=name)
