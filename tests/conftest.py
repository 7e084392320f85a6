"""Test configuration: every async test runs on Trio and on asyncio (AnyIO's plugin).

AnyIO's pytest plugin is the one async plugin in charge; tests that need exact
time run under Trio with ``MockClock(autojump_threshold=0)``: through the test
kit's ``run_with_mock_clock``, or its plugin's ``ti_mock_clock_backend`` as the
AnyIO backend (asyncio has no virtual clock).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- real services --------------------------------------------------------------
# Connector tests talk to real servers. On a machine without them they skip with
# the reason; under CI=true a missing service is a failure, never a skip.

import os  # noqa: E402
import socket  # noqa: E402

POSTGRES_DSN = os.environ.get(
    "TRIO_INGEST_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TRIO_INGEST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or under CI=true, fail) unless ``host:port`` accepts a TCP connection."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return
    except OSError as exc:
        message = f"{name} is not reachable on {host}:{port} ({exc})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI requires it", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def postgres_dsn() -> str:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return POSTGRES_DSN


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A unique Redis key prefix (streams are named under it); its keys are deleted after."""
    import uuid

    from redis_factory import redis_command

    name = f"ti-test-{uuid.uuid4().hex[:10]}"
    yield name
    keys = redis_command(redis_url, "KEYS", f"{name}*")
    if keys:
        redis_command(redis_url, "DEL", *keys)


# -- Kafka (tansu) ----------------------------------------------------------------
# .ci/run starts tansu (a Kafka-protocol broker) on a free loopback port and
# exports its address; locally, export TRIO_INGEST_KAFKA=127.0.0.1:PORT yourself.


@pytest.fixture
def kafka_bootstrap() -> str:
    """The broker's ``host:port``; skip (fail under CI=true) when there is none."""
    address = os.environ.get("TRIO_INGEST_KAFKA")
    if not address:
        message = "no Kafka broker: TRIO_INGEST_KAFKA=host:port is not set (.ci/run sets it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI requires it", pytrace=False)
        pytest.skip(message)
    host, _, port = address.rpartition(":")
    require_service("Kafka (tansu)", host, int(port))
    return address


@pytest.fixture
def kafka_topics(kafka_bootstrap: str) -> Iterator[Callable[[int], str]]:
    """``make(partitions) -> topic``: unique topics, deleted after the test."""
    import uuid

    from kafka_factory import create_topic, delete_topics

    made: list[str] = []

    def make(partitions: int = 4) -> str:
        name = f"ti-test-{uuid.uuid4().hex[:10]}"
        create_topic(kafka_bootstrap, name, partitions)
        made.append(name)
        return name

    yield make
    if made:
        delete_topics(kafka_bootstrap, made)
