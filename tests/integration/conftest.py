"""Integration-test wiring: one real Kafka broker per test session (scripts/kafka-local), and a
Confluent-compatible Schema Registry (scripts/schema-registry-local) for the tests that ask.

Set KAFKA_BOOTSTRAP_SERVERS to use a broker you run yourself instead; `restart()` is then skipped.
Set SCHEMA_REGISTRY_URL (a Confluent-compatible base URL) to use a registry of your own likewise.
"""

from __future__ import annotations

import atexit
import os
import random
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from consumer.emulator.control import EmulatorControl
from consumer.emulator.server import start_emulator
from tests.integration.service_helpers import API_KEY, Scenario, make_scenario

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_LOCAL = REPO_ROOT / "scripts" / "kafka-local"
INTEGRATION_DIR = Path(__file__).resolve().parent
PORT_LOW, PORT_HIGH = 39000, 39999
# The first start of a fresh machine fetches the jars with Maven; later starts take seconds.
START_TIMEOUT_S = 280.0
STOP_TIMEOUT_S = 60.0
SCHEMA_REGISTRY_LOCAL = REPO_ROOT / "scripts" / "schema-registry-local"
# Apart from the brokers' range, so the two fixtures do not pick the same port.
REGISTRY_PORT_LOW, REGISTRY_PORT_HIGH = 38000, 38999


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration, so `-m "not integration"` skips them all."""
    for item in items:
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)


@dataclass(frozen=True)
class LocalKafka:
    """A broker this session started; owns its port pair and state dir."""

    port: int
    state_dir: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, keep_data: bool = False) -> None:
        self._run("start", keep_data, START_TIMEOUT_S)

    def stop(self, keep_data: bool = False) -> None:
        """Idempotent (the script is), so a finally block and an atexit hook may both call it."""
        self._run("stop", keep_data, STOP_TIMEOUT_S)

    def _run(self, command: str, keep_data: bool, timeout_s: float) -> None:
        env = {
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.port + 1),
            "KAFKA_LOCAL_DIR": str(self.state_dir),
            "KAFKA_KEEP_DATA": "1" if keep_data else "0",
            # Stops the broker even if this process is killed before any teardown runs.
            "KAFKA_OWNER_PID": str(os.getpid()),
            "KAFKA_PYTHON": sys.executable,
        }
        _run_script(KAFKA_LOCAL, command, env, timeout_s)


@dataclass(frozen=True)
class KafkaBroker:
    """What tests get: where the broker is, and a restart when this session owns it."""

    bootstrap: str
    local: LocalKafka | None

    def restart(self) -> None:
        """Stop the broker keeping its data, then start it again on the same port."""
        if self.local is None:
            pytest.skip("KAFKA_BOOTSTRAP_SERVERS points at a broker these tests did not start")
        self.local.stop(keep_data=True)
        self.local.start(keep_data=True)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port_pair(rng: random.Random) -> int:
    """A port P with P and P+1 both free; random so parallel sessions rarely collide."""
    for _ in range(100):
        port = rng.randrange(PORT_LOW, PORT_HIGH)
        if _bindable(port) and _bindable(port + 1):
            return port
    raise RuntimeError(f"no free port pair in {PORT_LOW}-{PORT_HIGH}")


class _Startable(Protocol):
    def start(self) -> None: ...


_S = TypeVar("_S", bound=_Startable)


def _started(make: Callable[[random.Random, Path], _S], state_root: Path) -> _S:
    """A local server made by `make` (a random port, a state dir per attempt) and started; a port
    another process took between our check and the server's bind means another try."""
    rng = random.Random()
    for attempt in range(3):
        local = make(rng, state_root / f"attempt-{attempt}")
        try:
            local.start()
        except RuntimeError as exc:
            if "already in use" not in str(exc) or attempt == 2:
                raise
        else:
            return local
    raise AssertionError("unreachable")


def _run_script(script: Path, command: str, env: dict[str, str], timeout_s: float) -> None:
    """`script command` with `env` added to ours; its stderr in the error when it fails."""
    done = subprocess.run(
        [str(script), command],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script.name} {command} failed ({done.returncode}):\n{done.stderr}")


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """The session's broker: KAFKA_BOOTSTRAP_SERVERS if set, else one started here."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield KafkaBroker(external, None)
        return
    local = _started(
        lambda rng, state: LocalKafka(_free_port_pair(rng), state), tmp_path_factory.mktemp("kafka")
    )
    # Belt and braces: the finally covers failing tests, atexit an interrupted session,
    # and KAFKA_OWNER_PID a killed one.
    atexit.register(local.stop)
    try:
        yield KafkaBroker(local.bootstrap, local)
    finally:
        local.stop()
        atexit.unregister(local.stop)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """`host:port` of the session's broker, for `bootstrap.servers`."""
    return kafka_broker.bootstrap


@dataclass(frozen=True)
class LocalSchemaRegistry:
    """A Schema Registry (Apicurio, H2 storage in its state dir) this session started; owns its
    port and state dir. `stop(keep_data=True)` then `start(keep_data=True)` is a restart that
    keeps every schema under its id; a plain `stop()` deletes them.
    """

    port: int
    state_dir: Path

    @property
    def url(self) -> str:
        """The Confluent-compatible API, for SchemaRegistryClient's `url`."""
        return f"http://127.0.0.1:{self.port}/apis/ccompat/v7"

    def start(self, keep_data: bool = False) -> None:
        """Start it on its port (again); returns once it answers. No-op while it runs."""
        self._run("start", START_TIMEOUT_S, keep_data)

    def stop(self, keep_data: bool = False) -> None:
        """Idempotent (the script is), so a finally block and an atexit hook may both call it."""
        self._run("stop", STOP_TIMEOUT_S, keep_data)

    def _run(self, command: str, timeout_s: float, keep_data: bool) -> None:
        env = {
            "SCHEMA_REGISTRY_PORT": str(self.port),
            "SCHEMA_REGISTRY_LOCAL_DIR": str(self.state_dir),
            "SCHEMA_REGISTRY_KEEP_DATA": "1" if keep_data else "0",
            # Stops the registry even if this process is killed before any teardown runs.
            "SCHEMA_REGISTRY_OWNER_PID": str(os.getpid()),
        }
        _run_script(SCHEMA_REGISTRY_LOCAL, command, env, timeout_s)


@dataclass(frozen=True)
class SchemaRegistry:
    """What tests get: the registry's Confluent-compatible URL, and the local registry when
    this session started it (None for SCHEMA_REGISTRY_URL: then tests cannot stop it)."""

    url: str
    local: LocalSchemaRegistry | None


def _free_port(rng: random.Random) -> int:
    for _ in range(100):
        port = rng.randrange(REGISTRY_PORT_LOW, REGISTRY_PORT_HIGH)
        if _bindable(port):
            return port
    raise RuntimeError(f"no free port in {REGISTRY_PORT_LOW}-{REGISTRY_PORT_HIGH}")


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchemaRegistry]:
    """The session's Schema Registry: SCHEMA_REGISTRY_URL if set, else one started here on the
    first test that asks for it (sessions without such a test start none)."""
    external = os.environ.get("SCHEMA_REGISTRY_URL")
    if external:
        yield SchemaRegistry(external.rstrip("/"), None)
        return
    local = _started(
        lambda rng, state: LocalSchemaRegistry(_free_port(rng), state),
        tmp_path_factory.mktemp("schema-registry"),
    )
    # As for the broker: finally for failing tests, atexit for an interrupted session and
    # SCHEMA_REGISTRY_OWNER_PID for a killed one.
    atexit.register(local.stop)
    try:
        yield SchemaRegistry(local.url, local)
    finally:
        local.stop()
        atexit.unregister(local.stop)


@pytest.fixture
def emulator() -> Iterator[tuple[EmulatorControl, str]]:
    """A Braze emulator of this test's own, and its URL."""
    with start_emulator(api_keys=(API_KEY,)) as running:
        yield EmulatorControl(running.url), running.url


@pytest.fixture
def scenario(
    kafka_bootstrap: str, tmp_path: Path, emulator: tuple[EmulatorControl, str]
) -> Scenario:
    """A topic, group, dead-letter topic and rules file of this test's own (one partition)."""
    control, url = emulator
    return make_scenario(kafka_bootstrap, tmp_path, control, url)
