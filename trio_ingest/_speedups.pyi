from typing import Any

def rebuild(
    event_type: type[tuple[Any, ...]], events: list[Any], payloads: list[Any], /
) -> list[Any]: ...
