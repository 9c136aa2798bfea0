"""Settings: `config/consumer.yaml` plus `BRAZE_CONSUMER_<SECTION>__<KEY>` overrides, checked once.

The Braze API key never comes from the YAML: it is read from `BRAZE_API_KEY` or `braze.api_key_file`
and kept as a `SecretStr`, so printing the settings never shows it.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from consumer.braze.client import BrazeClientConfig
from consumer.guard import GuardPolicy
from consumer.hold import HoldPolicy
from consumer.yaml_lines import LineIndex, YamlError, load_yaml_with_lines

ENV_PREFIX = "BRAZE_CONSUMER_"
SETTINGS_MAX_BYTES = 1_048_576  # the settings file is a few KB; a larger one is a mistake
API_KEY_ENV = "BRAZE_API_KEY"

# librdkafka properties the service owns: letting a user set them would break at-least-once.
_MANAGED_CLIENT_KEYS = frozenset(
    {
        "bootstrap.servers",
        "group.id",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "partition.assignment.strategy",
        "on_commit",
        "error_cb",
        "logger",
    }
)

ClientValue = str | int | float | bool


class _Section(BaseModel):
    """A settings section. Durations are in seconds (`_s`); the `_ms` spellings of earlier
    versions (and of product.md's `max_wait_ms`) are still accepted and converted."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _MS_ALIASES: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _milliseconds(cls, data: object) -> object:
        if not isinstance(data, dict) or not cls._MS_ALIASES:
            return data
        data = dict(data)
        for old, new in cls._MS_ALIASES.items():
            if old not in data:
                continue
            if new in data:
                raise ValueError(f"give {new} or {old}, not both")
            value = data.pop(old)
            data[new] = _ms_to_s(value)
        return data


def _ms_to_s(value: object) -> object:
    """Milliseconds as seconds; anything that is not a number is left for validation to refuse."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value / 1000
    if isinstance(value, str):
        try:
            return float(value) / 1000
        except ValueError:
            return value
    return value


class SchemaRegistrySettings(_Section):
    """A Confluent-compatible Schema Registry: values (and keys) in the Confluent wire format
    (byte 0, a 4-byte schema id, the payload) are decoded with the schema it serves by id."""

    # Base URL of the Confluent-compatible API (Apicurio: .../apis/ccompat/v7). None: no
    # registry; a wire-format event is then an invalid_payload dead letter (replayable once
    # one is configured), as the README says.
    url: str | None = None
    basic_auth_user: str | None = None
    # The password is read from this file, never from the YAML; it is never logged.
    basic_auth_password_file: Path | None = None
    ssl_ca_location: Path | None = None  # CA bundle to verify the registry's certificate
    ssl_certificate_location: Path | None = None  # client certificate (mutual TLS)
    ssl_key_location: Path | None = None  # its private key
    # One request to the registry (a schema fetch blocks the consumer loop this long at most).
    timeout_s: float = Field(5.0, gt=0, le=60)
    # While the registry cannot be reached: first and longest wait before trying again.
    retry_initial_interval_s: float = Field(1.0, gt=0, le=3_600)
    retry_max_interval_s: float = Field(30.0, gt=0, le=3_600)
    # http:// sends the basic-auth password in clear text: only to a loopback host unless set.
    allow_insecure_http: bool = False

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (or http://)")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _credentials(self) -> SchemaRegistrySettings:
        if (self.basic_auth_user is None) != (self.basic_auth_password_file is None):
            raise ValueError("basic_auth_user and basic_auth_password_file go together")
        if self.ssl_key_location is not None and self.ssl_certificate_location is None:
            raise ValueError("ssl_key_location needs ssl_certificate_location")
        url = self.url or ""
        clear_text = url.startswith("http://") and not _is_loopback(urlsplit(url).hostname or "")
        if clear_text and self.basic_auth_user and not self.allow_insecure_http:
            raise ValueError(
                "http:// would send the registry password in clear text: use https://, or "
                "set kafka.schema_registry.allow_insecure_http: true"
            )
        return self


class KafkaSettings(_Section):
    _MS_ALIASES = {
        "session_timeout_ms": "session_timeout_s",
        "max_poll_interval_ms": "max_poll_interval_s",
        "commit_interval_ms": "commit_interval_s",
    }
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "braze-consumer"
    dead_letter_topic: str = "braze-consumer.dlq"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_s: float = Field(45.0, ge=6, le=300)
    max_poll_interval_s: float = Field(300.0, ge=10)
    # At most one offset commit per this long; 0 commits after every loop turn that settled
    # something, so a crash re-sends only what was in flight.
    commit_interval_s: float = Field(0.0, ge=0, le=60)
    # A message larger than this is dead-lettered as too_large without being parsed.
    max_event_bytes: int = Field(1_048_576, ge=1_024, le=100 * 1_048_576)
    # librdkafka's prefetch queue (queued.max.messages.kbytes), bounded so memory stays within
    # the pod's limit; a `client:` entry of the same name wins.
    prefetch_kbytes: int = Field(16_384, ge=1_024, le=2_097_151)
    client: dict[str, ClientValue] = Field(default_factory=dict)
    schema_registry: SchemaRegistrySettings = SchemaRegistrySettings()

    @field_validator("client")
    @classmethod
    def _no_managed_keys(cls, value: dict[str, ClientValue]) -> dict[str, ClientValue]:
        clash = sorted(_MANAGED_CLIENT_KEYS.intersection(value))
        if clash:
            raise ValueError(f"set by the service, not under client: {', '.join(clash)}")
        return value


class BrazeSettings(_Section):
    _MS_ALIASES = {"connect_timeout_ms": "connect_timeout_s", "read_timeout_ms": "read_timeout_s"}
    rest_endpoint: str = "https://rest.iad-01.braze.com"
    # http:// sends the API key in clear text: only to a loopback host (the emulator) unless set.
    allow_insecure_http: bool = False
    # What the whole deployment may spend, every replica together (the same number in each):
    # each consumer-group member takes the share of its partitions (consumer/budget_share.py).
    requests_per_hour: int = Field(250_000, ge=1)
    api_key_file: Path | None = None
    # 24 x 300 ms latency still reaches the 250k/h budget (69 req/s); 8 reached only 39.
    max_in_flight: int = Field(24, ge=1, le=64)
    connect_timeout_s: float = Field(5.0, ge=0.1)
    read_timeout_s: float = Field(30.0, ge=0.1)
    # Attempts of one request (429, 5xx, timeouts); after them the service holds and probes.
    max_attempts: int = Field(3, ge=1, le=50)
    max_retry_time_s: float = Field(30.0, gt=0)
    max_rate_limit_wait_s: float = Field(3_600.0, gt=0)
    # While held for a Braze or deployment failure: first and longest wait between probes.
    probe_initial_interval_s: float = Field(1.0, gt=0, le=3_600)
    probe_max_interval_s: float = Field(30.0, gt=0, le=3_600)
    # A Canvas/campaign Braze rejects whatever the recipients: dead-letter its intents without a
    # request for this long (0: always ask Braze).
    rejected_target_cooldown_s: float = Field(600.0, ge=0)

    @field_validator("rest_endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (or http:// for a local emulator)")
        return value.rstrip("/")

    def client_config(self) -> BrazeClientConfig:
        """What the Braze client needs: a new Braze setting is mapped here and nowhere else."""
        return BrazeClientConfig(
            rest_endpoint=self.rest_endpoint,
            requests_per_hour=self.requests_per_hour,
            max_in_flight=self.max_in_flight,
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
            max_attempts=self.max_attempts,
            max_retry_time_s=self.max_retry_time_s,
            max_rate_limit_wait_s=self.max_rate_limit_wait_s,
        )

    def hold_policy(self) -> HoldPolicy:
        return HoldPolicy(self.probe_initial_interval_s, self.probe_max_interval_s)

    @model_validator(mode="after")
    def _no_clear_text_key(self) -> BrazeSettings:
        if self.rest_endpoint.startswith("http://") and not self.allow_insecure_http:
            host = urlsplit(self.rest_endpoint).hostname or ""
            if not _is_loopback(host):
                raise ValueError(
                    "http:// would send the API key in clear text: use https://, or set "
                    "braze.allow_insecure_http: true (only for a trusted network)"
                )
        return self


class BatchingSettings(_Section):
    _MS_ALIASES = {"max_wait_ms": "max_wait_s"}
    max_recipients: int = Field(50, ge=1, le=50)
    max_wait_s: float = Field(0.5, ge=0, le=60)
    max_buffered_events: int = Field(10_000, ge=1)
    # ... or this many bytes of unsettled events, whichever comes first (memory is bytes, not
    # counts: 10,000 events of a few hundred KB would not fit the pod).
    max_buffered_bytes: int = Field(32 * 1_048_576, ge=1_048_576)


class MetricsSettings(_Section):
    host: str = "0.0.0.0"  # noqa: S104  # scraped from outside the pod
    port: int = Field(9464, ge=0, le=65_535)


class ShutdownSettings(_Section):
    drain_timeout_s: float = Field(25.0, gt=0)
    revoke_timeout_s: float = Field(10.0, gt=0)


class DeadLetterSettings(_Section):
    # Stop (exit 1) instead of dead-lettering the stream after a bad deploy: more than
    # `max_share` of the last `window` matched events dead-lettered, once `min_events` are in.
    max_share: float = Field(0.5, gt=0, le=1)
    window: int = Field(1_000, ge=1, le=1_000_000)
    min_events: int = Field(100, ge=1)

    def guard_policy(self) -> GuardPolicy:
        return GuardPolicy(self.window, self.max_share, self.min_events)

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data: object) -> object:
        if isinstance(data, dict) and "max_consecutive" in data:
            raise ValueError(
                "max_consecutive was replaced by max_share and window "
                "(a share of dead letters, not a streak)"
            )
        return data


class LoggingSettings(_Section):
    # `--log-level` / `--log-format` win over these (and BRAZE_CONSUMER_LOGGING__* over the file).
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"  # json: one object per line (consumer/logs.py)

    @field_validator("level", "format", mode="before")
    @classmethod
    def _any_case(cls, value: object, info: ValidationInfo) -> object:
        """`info` or `JSON` (e.g. from the environment) read as INFO and json."""
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "level" else value.lower()


class Settings(_Section):
    kafka: KafkaSettings = KafkaSettings()
    braze: BrazeSettings = BrazeSettings()
    batching: BatchingSettings = BatchingSettings()
    rules: Path = Path("config/rules.yaml")
    # Each rules file at most this large: a 9 MB file takes ~400 MiB to load, more than the pod
    # has to spare; 1 MiB holds about 1,400 rules.
    rules_max_bytes: int = Field(1_048_576, ge=1_024, le=100 * 1_048_576)
    metrics: MetricsSettings = MetricsSettings()
    shutdown: ShutdownSettings = ShutdownSettings()
    dead_letter: DeadLetterSettings = DeadLetterSettings()
    logging: LoggingSettings = LoggingSettings()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SettingsError(Exception):
    """Every problem in the settings, one `file:line: key: message` per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, override from the environment, validate. Raises SettingsError listing every problem."""
    env = os.environ if environ is None else environ
    try:
        data, lines = load_yaml_with_lines(path, max_bytes=SETTINGS_MAX_BYTES)
    except YamlError as exc:
        raise SettingsError([f"{path}:{exc.line}: {exc.message}"]) from None
    except OSError as exc:
        raise SettingsError([f"{path}: cannot read: {exc.strerror}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SettingsError([f"{path}:1: settings must be a mapping of sections"])
    for loc, line in lines.duplicate_keys:
        raise SettingsError([f"{path}:{line}: {'.'.join(map(str, loc))}: duplicate key"])
    problems = _forbidden_secret_keys(path, data, lines)
    overrides: dict[tuple[str, ...], str] = {}
    problems += _apply_env(data, env, overrides)
    if problems:
        raise SettingsError(problems)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(_describe(path, exc, lines, overrides)) from None
    return _resolve_rules_path(settings, path)


def load_api_key(settings: Settings, environ: Mapping[str, str] | None = None) -> SecretStr:
    """The key from `BRAZE_API_KEY`, else from `braze.api_key_file`. Never logged."""
    env = os.environ if environ is None else environ
    key = env.get(API_KEY_ENV, "").strip()
    if not key and settings.braze.api_key_file is not None:
        try:
            key = settings.braze.api_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError([f"braze.api_key_file: cannot read: {exc.strerror}"]) from None
    if not key:
        raise SettingsError([f"no Braze API key: set {API_KEY_ENV} or braze.api_key_file"])
    return SecretStr(key)


def kafka_consumer_config(settings: Settings) -> dict[str, ClientValue]:
    """The librdkafka dict for the consumer: offsets are committed by the service, never auto."""
    kafka = settings.kafka
    config: dict[str, ClientValue] = dict(kafka.client)
    config.update(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": kafka.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": kafka.auto_offset_reset,
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": round(kafka.session_timeout_s * 1000),
            "max.poll.interval.ms": round(kafka.max_poll_interval_s * 1000),
        }
    )
    config.setdefault("queued.max.messages.kbytes", kafka.prefetch_kbytes)
    # With a bounded prefetch queue, librdkafka waits fetch.queue.backoff.ms (1 s by default)
    # each time the queue is full before fetching again: a backlog was read in 16 MiB gulps a
    # second apart (make bench: 33-47k events/s for a plain consumer, against 55-128k at 10 ms).
    config.setdefault("fetch.queue.backoff.ms", 10)
    return config


def kafka_producer_config(settings: Settings) -> dict[str, ClientValue]:
    """The dead-letter producer: idempotent, acks from all in-sync replicas."""
    config: dict[str, ClientValue] = {
        k: v for k, v in settings.kafka.client.items() if not k.startswith(("fetch.", "auto."))
    }
    config.update(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
        }
    )
    return config


def _forbidden_secret_keys(path: Path, data: dict[str, object], lines: LineIndex) -> list[str]:
    braze = data.get("braze")
    if isinstance(braze, dict) and "api_key" in braze:
        line = lines.line_of(("braze", "api_key"))
        return [
            f"{path}:{line}: braze.api_key: the API key never goes in the YAML; "
            f"use {API_KEY_ENV} or braze.api_key_file"
        ]
    kafka = data.get("kafka")
    registry = kafka.get("schema_registry") if isinstance(kafka, dict) else None
    if isinstance(registry, dict) and "basic_auth_password" in registry:
        line = lines.line_of(("kafka", "schema_registry", "basic_auth_password"))
        return [
            f"{path}:{line}: kafka.schema_registry.basic_auth_password: the password never goes "
            "in the YAML; use kafka.schema_registry.basic_auth_password_file"
        ]
    return []


def _apply_env(
    data: dict[str, object], env: Mapping[str, str], overrides: dict[tuple[str, ...], str]
) -> list[str]:
    """`BRAZE_CONSUMER_KAFKA__BOOTSTRAP_SERVERS=x` sets kafka.bootstrap_servers;
    `BRAZE_CONSUMER_KAFKA__CLIENT__SASL_USERNAME=u` sets the librdkafka property `sasl.username`.
    Values are validated with the rest; `overrides` records which variable set which key, and
    which variables made a section the file does not have (a misspelt section such as
    `BRAZE_CONSUMER_KAFKAA__...` fails as a whole: that error must name them, not the file)."""
    problems: list[str] = []
    made: dict[tuple[str, ...], list[str]] = {}  # sections the variables create or replace
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if not all(parts) or len(parts) > 3:
            problems.append(f"{name}: expected {ENV_PREFIX}<SECTION>__<KEY>")
            continue
        if len(parts) == 3:
            if parts[:2] == ["kafka", "client"]:
                parts[2] = parts[2].replace("_", ".")
            elif parts[:2] != ["kafka", "schema_registry"]:
                problems.append(
                    f"{name}: only KAFKA__CLIENT__<PROPERTY> and KAFKA__SCHEMA_REGISTRY__<KEY> "
                    "have three parts"
                )
                continue
        node: object = data
        for depth in range(1, len(parts)):
            section = tuple(parts[:depth])
            node = node.get(parts[depth - 1]) if isinstance(node, dict) else None
            if section in made or not isinstance(node, dict):
                made.setdefault(section, []).append(name)
                break
        _set_path(data, parts, env[name])
        overrides[tuple(parts)] = name
    overrides.update((section, ", ".join(names)) for section, names in made.items())
    return problems


def _set_path(data: dict[str, object], parts: list[str], value: str) -> None:
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _describe(
    path: Path, exc: ValidationError, lines: LineIndex, overrides: Mapping[tuple[str, ...], str]
) -> list[str]:
    problems = []
    for error in exc.errors():
        loc = _as_written(tuple(error["loc"]), lines, overrides)
        key = ".".join(str(p) for p in loc) or "-"
        # A value from the environment is named by its variable: the file's line would mislead.
        where = next((v for k, v in overrides.items() if loc[: len(k)] == k), None)
        if where is None:
            # A section's own check (`braze`, `kafka.client`) failed: the file and the variables
            # that set keys inside it made it together.
            inside = [v for k, v in overrides.items() if k[: len(loc)] == loc]
            where = " and ".join([*inside, f"{path}:{lines.line_of(loc)}"])
        problems.append(f"{where}: {key}: {error['msg']}")
    return problems


def _as_written(
    loc: tuple[str | int, ...], lines: LineIndex, overrides: Mapping[tuple[str, ...], str]
) -> tuple[str | int, ...]:
    """The key as the user spelt it: `max_wait_ms` for an error on the `max_wait_s` it became."""
    last = loc[-1] if loc else None
    if not isinstance(last, str) or not last.endswith("_s"):
        return loc
    written = (*loc[:-1], last[:-2] + "_ms")
    if written in lines.lines or written in overrides:
        return written
    return loc


def _resolve_rules_path(settings: Settings, config_path: Path) -> Settings:
    """A relative `rules:` path is taken from the working directory if it exists there, else
    from the settings file's folder (so both `config/rules.yaml` and `rules.yaml` work)."""
    rules = settings.rules
    if rules.is_absolute() or rules.exists():
        return settings
    beside = config_path.parent / rules
    return settings.model_copy(update={"rules": beside}) if beside.exists() else settings
