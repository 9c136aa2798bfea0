"""Settings: the YAML file, environment overrides, the API key and the librdkafka dicts."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from consumer.settings import (
    Settings,
    SettingsError,
    kafka_consumer_config,
    kafka_producer_config,
    load_api_key,
    load_settings,
)

REPO = Path(__file__).resolve().parents[2]
SECRET = "sk-very-secret-1234"


def write(tmp_path: Path, text: str, name: str = "consumer.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        load_settings(path, environ or {})
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


# -- the shipped file -------------------------------------------------------------------------


def test_shipped_file_loads_with_the_documented_values() -> None:
    settings = load_settings(REPO / "config" / "consumer.yaml", {})
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.kafka.group_id == "braze-consumer"
    assert settings.kafka.dead_letter_topic == "braze-consumer.dlq"
    assert settings.braze.rest_endpoint == "https://rest.iad-01.braze.com"
    assert settings.braze.requests_per_hour == 250_000
    assert settings.batching.max_recipients == 50
    assert settings.batching.max_wait_s == 0.5
    assert settings.metrics.port == 9464
    assert settings.rules.name == "rules.yaml"
    assert settings.rules.exists()


def test_shipped_file_agrees_with_the_code_defaults() -> None:
    """The YAML documents the defaults: a file and code that drift apart would mislead."""
    settings = load_settings(REPO / "config" / "consumer.yaml", {})
    assert settings.model_copy(update={"rules": Settings().rules}) == Settings()


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert (
        load_settings(write(tmp_path, ""), {}).model_copy(update={"rules": Settings().rules})
        == Settings()
    )


# -- YAML problems ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        pytest.param("nope: 1\n", 1, "nope", id="unknown section"),
        pytest.param("kafka:\n  group_id: g\n  nope: 1\n", 3, "kafka.nope", id="unknown kafka key"),
        pytest.param("braze:\n  nope: 1\n", 2, "braze.nope", id="unknown braze key"),
        pytest.param("batching:\n  nope: 1\n", 2, "batching.nope", id="unknown batching key"),
        pytest.param("metrics:\n  port: 1\n  nope: 1\n", 3, "metrics.nope", id="unknown metrics"),
        pytest.param("shutdown:\n  nope: 1\n", 2, "shutdown.nope", id="unknown shutdown key"),
        pytest.param("dead_letter:\n  nope: 1\n", 2, "dead_letter.nope", id="unknown dlq key"),
        pytest.param("batching:\n  max_recipients: 0\n", 2, "batching.max_recipients", id="0"),
        pytest.param("batching:\n  max_recipients: 51\n", 2, "batching.max_recipients", id="51"),
        pytest.param("batching:\n  max_wait_ms: soon\n", 2, "batching.max_wait_ms", id="str int"),
        pytest.param("batching:\n  max_wait_ms: -1\n", 2, "batching.max_wait_ms", id="negative"),
        pytest.param("metrics:\n  port: [1]\n", 2, "metrics.port", id="list for int"),
        pytest.param("kafka: []\n", 1, "kafka", id="list for section"),
        pytest.param(
            "kafka:\n  auto_offset_reset: middle\n", 2, "kafka.auto_offset_reset", id="enum"
        ),
        pytest.param("braze:\n  rest_endpoint: ftp://x\n", 2, "braze.rest_endpoint", id="scheme"),
        pytest.param(
            "kafka:\n  client:\n    debug: [all]\n", 3, "kafka.client.debug", id="client list"
        ),
    ],
)
def test_yaml_problem_names_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str
) -> None:
    path = write(tmp_path, text)
    problems = problems_of(path)
    assert any(p.startswith(f"{path}:{line}: {key}") for p in problems), problems


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  nope: 1\nbatching:\n  max_recipients: 99\nextra: 1\n")
    problems = problems_of(path)
    assert sorted(p.split(": ")[0] for p in problems) == [f"{path}:{n}" for n in (2, 4, 5)]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("- a\n- b\n", ":1: settings must be a mapping", id="list document"),
        pytest.param("kafka:\n  group_id: a\n  group_id: b\n", ":3: kafka.group_id: dup", id="dup"),
        pytest.param("kafka: {group_id: [\n", ":", id="broken yaml"),
    ],
)
def test_malformed_file(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, text)
    problems = problems_of(path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:"), problems
    assert fragment in problems[0]
    assert re.match(rf"{re.escape(str(path))}:\d+: ", problems[0]), problems


def test_missing_file(tmp_path: Path) -> None:
    problems = problems_of(tmp_path / "absent.yaml")
    assert problems == [f"{tmp_path / 'absent.yaml'}: cannot read: No such file or directory"]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"braze:\n  api_key: {SECRET}\n", id="plain"),
        pytest.param(f"braze:\n  api_key: '{SECRET}'\n  nope: 1\n", id="with another problem"),
        pytest.param(f"braze: {{api_key: {SECRET}}}\n", id="flow mapping"),
    ],
)
def test_api_key_in_yaml_is_rejected_without_echoing_it(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    problems = problems_of(path)
    assert any("braze.api_key" in p and "BRAZE_API_KEY" in p for p in problems), problems
    assert all(SECRET not in p for p in problems)


def test_api_key_in_env_override_is_rejected_without_echoing_it(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, ""), {"BRAZE_CONSUMER_BRAZE__API_KEY": SECRET})
    assert any("braze.api_key" in p for p in problems), problems
    assert all(SECRET not in p for p in problems)


def test_managed_client_key_from_env_is_rejected(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, ""), {"BRAZE_CONSUMER_KAFKA__CLIENT__GROUP_ID": "g"})
    assert len(problems) == 1
    assert "kafka.client" in problems[0]
    assert "group.id" in problems[0]


@pytest.mark.parametrize(
    "key",
    [
        "bootstrap.servers",
        "group.id",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "partition.assignment.strategy",
    ],
)
def test_managed_client_keys_are_rejected(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, f"kafka:\n  client:\n    security.protocol: SSL\n    {key}: x\n")
    problems = problems_of(path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:2: kafka.client:"), problems
    assert key in problems[0]


# -- environment overrides ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "read", "expected"),
    [
        pytest.param(
            {"BRAZE_CONSUMER_KAFKA__BOOTSTRAP_SERVERS": "kafka:9093"},
            lambda s: s.kafka.bootstrap_servers,
            "kafka:9093",
            id="bootstrap servers over the file",
        ),
        pytest.param(
            {"BRAZE_CONSUMER_BATCHING__MAX_WAIT_MS": "750"},
            lambda s: s.batching.max_wait_s,
            0.75,
            id="the _ms spelling, as a string, in seconds",
        ),
        pytest.param(
            {"BRAZE_CONSUMER_BATCHING__MAX_WAIT_S": "0.25"},
            lambda s: s.batching.max_wait_s,
            0.25,
            id="string coerced to a number",
        ),
        pytest.param(
            {"BRAZE_CONSUMER_KAFKA__CLIENT__SASL_USERNAME": "svc"},
            lambda s: s.kafka.client,
            {"security.protocol": "SASL_SSL", "sasl.username": "svc"},
            id="client property joins the file's",
        ),
        pytest.param(
            {"BRAZE_CONSUMER_RULES": "other/rules.yaml"},
            lambda s: s.rules,
            Path("other/rules.yaml"),
            id="top-level key",
        ),
        pytest.param(
            {"BRAZE_CONSUMER_METRICS__PORT": "0", "OTHER_VAR": "x", "BRAZE_API_KEY": "k"},
            lambda s: s.metrics.port,
            0,
            id="other variables ignored",
        ),
        pytest.param(
            {"BRAZE_CONSUMER_SHUTDOWN__DRAIN_TIMEOUT_S": "2.5"},
            lambda s: s.shutdown.drain_timeout_s,
            2.5,
            id="float and a section absent from the file",
        ),
    ],
)
def test_env_override(
    tmp_path: Path,
    environ: dict[str, str],
    read: Callable[[Settings], object],
    expected: object,
) -> None:
    path = write(
        tmp_path,
        "kafka:\n  bootstrap_servers: file:9092\n  client:\n    security.protocol: SASL_SSL\n",
    )
    settings = load_settings(path, environ)
    assert read(settings) == expected


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        pytest.param("BRAZE_CONSUMER_KAFKA____X", "1", "expected BRAZE_CONSUMER_", id="empty part"),
        pytest.param("BRAZE_CONSUMER_", "1", "expected BRAZE_CONSUMER_", id="no section"),
        pytest.param("BRAZE_CONSUMER_KAFKA__", "1", "expected BRAZE_CONSUMER_", id="no key"),
        pytest.param(
            "BRAZE_CONSUMER_KAFKA__CLIENT__SASL__USERNAME", "u", "expected", id="four parts"
        ),
        pytest.param("BRAZE_CONSUMER_BRAZE__X__Y", "1", "KAFKA__CLIENT__", id="three not client"),
        pytest.param("BRAZE_CONSUMER_KAFKA__NOPE", "1", "kafka.nope", id="unknown key"),
        pytest.param("BRAZE_CONSUMER_NOPE", "1", "nope", id="unknown section"),
        pytest.param("BRAZE_CONSUMER_BATCHING__MAX_WAIT_MS", "soon", "max_wait_ms", id="bad int"),
        pytest.param("BRAZE_CONSUMER_BATCHING__MAX_RECIPIENTS", "51", "max_recipients", id="51"),
        pytest.param("BRAZE_CONSUMER_KAFKA", "x", "kafka", id="scalar for a section"),
    ],
)
def test_bad_env_override_is_an_error_naming_the_variable(
    tmp_path: Path, name: str, value: str, fragment: str
) -> None:
    path = write(tmp_path, "kafka:\n  group_id: g\nbatching:\n  max_wait_ms: 100\n")
    problems = problems_of(path, {name: value})
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{name}:"), problems
    assert fragment in problems[0]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param(
            {"BRAZE_CONSUMER_KAFKA__BOOTSTRAP_SERVER": "kafka:9092"},
            "BRAZE_CONSUMER_KAFKA__BOOTSTRAP_SERVER: kafka.bootstrap_server:"
            " Extra inputs are not permitted",
            id="misspelt key",
        ),
        pytest.param(
            {"BRAZE_CONSUMER_KAFKAA__BOOTSTRAP_SERVERS": "kafka:9092"},
            "BRAZE_CONSUMER_KAFKAA__BOOTSTRAP_SERVERS: kafkaa: Extra inputs are not permitted",
            id="misspelt section",
        ),
        pytest.param(
            {"BRAZE_CONSUMER_METRIC__PORT": "1", "BRAZE_CONSUMER_METRIC__HOST": "h"},
            "BRAZE_CONSUMER_METRIC__HOST, BRAZE_CONSUMER_METRIC__PORT: metric:"
            " Extra inputs are not permitted",
            id="misspelt section, two variables",
        ),
        pytest.param(
            {"BRAZE_CONSUMER_RULES__PATH": "r.yaml"},
            "BRAZE_CONSUMER_RULES__PATH: rules: Input is not a valid path for <class"
            " 'pathlib.Path'>",
            id="a section over the file's scalar",
        ),
        pytest.param(
            {"BRAZE_CONSUMER_KAFKA__CLIENT__GROUP_ID": "g"},
            "BRAZE_CONSUMER_KAFKA__CLIENT__GROUP_ID: kafka.client: Value error, set by the"
            " service, not under client: group.id",
            id="a client section the file does not have",
        ),
    ],
)
def test_env_typo_is_named_by_its_variable_not_the_file(
    tmp_path: Path, environ: dict[str, str], expected: str
) -> None:
    path = write(tmp_path, "# the file\nkafka:\n  group_id: g\nrules: config/rules.yaml\n")
    assert problems_of(path, environ) == [expected]


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        pytest.param(
            "braze:\n  allow_insecure_http: false\n",
            {"BRAZE_CONSUMER_BRAZE__REST_ENDPOINT": "http://braze.example.com"},
            "BRAZE_CONSUMER_BRAZE__REST_ENDPOINT and {path}:1: braze: Value error, http://",
            id="a section check: the variable and the file",
        ),
        pytest.param(
            "kafka:\n  client:\n    security.protocol: SSL\n",
            {"BRAZE_CONSUMER_KAFKA__CLIENT__GROUP_ID": "g"},
            "BRAZE_CONSUMER_KAFKA__CLIENT__GROUP_ID and {path}:2: kafka.client: Value error",
            id="client properties from both",
        ),
        pytest.param(
            "braze:\n  rest_endpoint: http://braze.example.com\n",
            {},
            "{path}:1: braze: Value error, http://",
            id="the file alone",
        ),
    ],
)
def test_section_errors_name_the_variables_that_changed_the_section(
    tmp_path: Path, text: str, environ: dict[str, str], expected: str
) -> None:
    path = write(tmp_path, text)
    [problem] = problems_of(path, environ)
    assert problem.startswith(expected.format(path=path)), problem


# -- rules path -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("in_cwd", "beside_config", "expected"),
    [
        pytest.param(True, True, "rules.yaml", id="working directory first"),
        pytest.param(False, True, "conf/rules.yaml", id="else beside the settings file"),
        pytest.param(False, False, "rules.yaml", id="neither: left for the rules loader"),
    ],
)
def test_relative_rules_path(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    in_cwd: bool,
    beside_config: bool,
    expected: str,
) -> None:
    work = tmp_path / "work"
    conf = tmp_path / "conf"
    work.mkdir()
    conf.mkdir()
    if in_cwd:
        (work / "rules.yaml").write_text("rules: []\n")
    if beside_config:
        (conf / "rules.yaml").write_text("rules: []\n")
    monkeypatch.chdir(work)
    settings = load_settings(write(conf, "rules: rules.yaml\n"), {})
    wanted = Path(expected) if expected == "rules.yaml" else tmp_path / expected
    assert settings.rules == wanted


def test_absolute_rules_path_is_kept(tmp_path: Path) -> None:
    absent = tmp_path / "nowhere" / "rules.yaml"
    settings = load_settings(write(tmp_path, f"rules: {absent}\n"), {})
    assert settings.rules == absent


# -- API key ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env_key", "file_text", "expected"),
    [
        pytest.param(f" {SECRET}\n", None, SECRET, id="from env, trimmed"),
        pytest.param(None, f"{SECRET}\n", SECRET, id="from file, trimmed"),
        pytest.param("from-env", "from-file", "from-env", id="env wins"),
        pytest.param("  ", "from-file", "from-file", id="blank env falls back to the file"),
    ],
)
def test_load_api_key(
    tmp_path: Path, env_key: str | None, file_text: str | None, expected: str
) -> None:
    key_file = tmp_path / "key"
    if file_text is not None:
        key_file.write_text(file_text, encoding="utf-8")
    settings = load_settings(write(tmp_path, f"braze:\n  api_key_file: {key_file}\n"), {})
    environ = {} if env_key is None else {"BRAZE_API_KEY": env_key}
    key = load_api_key(settings, environ)
    assert key.get_secret_value() == expected
    assert expected not in repr(key)
    assert expected not in str(key)
    assert expected not in repr(settings)
    assert expected not in str(settings)


@pytest.mark.parametrize(
    ("file_text", "fragment"),
    [
        pytest.param(None, "no Braze API key", id="no env, no file setting"),
        pytest.param("", "no Braze API key", id="empty file"),
        pytest.param("missing", "cannot read", id="file does not exist"),
    ],
)
def test_missing_api_key(tmp_path: Path, file_text: str | None, fragment: str) -> None:
    text = ""
    if file_text is not None:
        key_file = tmp_path / "key"
        if file_text != "missing":
            key_file.write_text(file_text, encoding="utf-8")
        text = f"braze:\n  api_key_file: {key_file}\n"
    settings = load_settings(write(tmp_path, text), {})
    with pytest.raises(SettingsError) as caught:
        load_api_key(settings, {"BRAZE_API_KEY": ""})
    assert fragment in str(caught.value)


# -- librdkafka dicts -------------------------------------------------------------------------

CLIENT_YAML = """\
kafka:
  bootstrap_servers: b:9092
  group_id: g
  client:
    security.protocol: SASL_SSL
    fetch.min.bytes: 10
    auto.commit.interval.ms: 10
"""


def test_consumer_config_leaves_commits_to_the_service(tmp_path: Path) -> None:
    config = kafka_consumer_config(load_settings(write(tmp_path, CLIENT_YAML), {}))
    assert config["enable.auto.commit"] is False
    assert config["enable.auto.offset.store"] is False
    assert config["partition.assignment.strategy"] == "cooperative-sticky"
    assert config["bootstrap.servers"] == "b:9092"
    assert config["group.id"] == "g"
    assert config["security.protocol"] == "SASL_SSL"
    assert config["fetch.min.bytes"] == 10


def test_producer_config_is_idempotent_with_all_acks(tmp_path: Path) -> None:
    config = kafka_producer_config(load_settings(write(tmp_path, CLIENT_YAML), {}))
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    assert config["bootstrap.servers"] == "b:9092"
    assert config["security.protocol"] == "SASL_SSL"
    assert "fetch.min.bytes" not in config
    assert "auto.commit.interval.ms" not in config
    assert "group.id" not in config


def test_replaced_max_consecutive_says_what_replaced_it(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, "dead_letter:\n  max_consecutive: 1000\n"))
    assert len(problems) == 1
    assert problems[0].startswith(f"{tmp_path / 'consumer.yaml'}:1: dead_letter:")
    assert "replaced by max_share and window" in problems[0]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        pytest.param("dead_letter:\n  max_share: 0\n", "dead_letter.max_share", id="share 0"),
        pytest.param("dead_letter:\n  max_share: 1.5\n", "dead_letter.max_share", id="share > 1"),
        pytest.param("dead_letter:\n  window: 0\n", "dead_letter.window", id="empty window"),
        pytest.param(
            "braze:\n  probe_max_interval_s: 0\n", "braze.probe_max_interval_s", id="probe"
        ),
        pytest.param("kafka:\n  commit_interval_ms: -1\n", "kafka.commit_interval_ms", id="commit"),
    ],
)
def test_delivery_settings_are_bounded(tmp_path: Path, text: str, key: str) -> None:
    [problem] = problems_of(write(tmp_path, text))
    assert f": {key}:" in problem


@pytest.mark.parametrize(
    ("endpoint", "allowed"),
    [
        pytest.param("https://rest.iad-01.braze.com", True, id="https"),
        pytest.param("http://127.0.0.1:8080", True, id="http to 127.0.0.1"),
        pytest.param("http://127.9.9.9:8080", True, id="http to 127/8"),
        pytest.param("http://localhost:8080", True, id="http to localhost"),
        pytest.param("http://[::1]:8080", True, id="http to ::1"),
        pytest.param("http://rest.iad-01.braze.com", False, id="http to Braze"),
        pytest.param("http://10.0.0.5:8080", False, id="http to a private address"),
        pytest.param("http://localhost.example.com", False, id="not localhost"),
    ],
)
def test_http_only_to_loopback(tmp_path: Path, endpoint: str, allowed: bool) -> None:
    path = write(tmp_path, f"braze:\n  rest_endpoint: {endpoint}\n")
    if allowed:
        assert load_settings(path, {}).braze.rest_endpoint == endpoint
        return
    [problem] = problems_of(path)
    assert "clear text" in problem
    opted_in = write(
        tmp_path, f"braze:\n  rest_endpoint: {endpoint}\n  allow_insecure_http: true\n"
    )
    assert load_settings(opted_in, {}).braze.rest_endpoint == endpoint


@pytest.mark.parametrize(
    ("text", "read", "expected"),
    [
        pytest.param(
            "batching:\n  max_wait_ms: 500\n", "batching.max_wait_s", 0.5, id="product.md"
        ),
        pytest.param("batching:\n  max_wait_s: 0.2\n", "batching.max_wait_s", 0.2, id="seconds"),
        pytest.param(
            "kafka:\n  session_timeout_ms: 10000\n", "kafka.session_timeout_s", 10.0, id="session"
        ),
        pytest.param(
            "kafka:\n  commit_interval_ms: 250\n", "kafka.commit_interval_s", 0.25, id="commit"
        ),
        pytest.param(
            "braze:\n  read_timeout_ms: 1500\n", "braze.read_timeout_s", 1.5, id="read timeout"
        ),
    ],
)
def test_durations_in_seconds_with_the_ms_spelling_still_accepted(
    tmp_path: Path, text: str, read: str, expected: float
) -> None:
    settings = load_settings(write(tmp_path, text), {})
    section, key = read.split(".")
    assert getattr(getattr(settings, section), key) == expected


def test_both_spellings_of_a_duration_are_refused(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, "batching:\n  max_wait_ms: 500\n  max_wait_s: 1\n"))
    assert "give max_wait_s or max_wait_ms, not both" in problem


# -- kafka.schema_registry ------------------------------------------------------------------


def test_schema_registry_settings_and_their_env_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  schema_registry:\n    url: https://registry:8081/\n")
    env = {
        "BRAZE_CONSUMER_KAFKA__SCHEMA_REGISTRY__TIMEOUT_S": "2.5",
        "BRAZE_CONSUMER_KAFKA__SCHEMA_REGISTRY__BASIC_AUTH_USER": "svc",
        "BRAZE_CONSUMER_KAFKA__SCHEMA_REGISTRY__BASIC_AUTH_PASSWORD_FILE": str(tmp_path / "pw"),
    }
    registry = load_settings(path, env).kafka.schema_registry
    assert registry.url == "https://registry:8081"
    assert registry.timeout_s == 2.5
    assert registry.basic_auth_user == "svc"
    assert load_settings(write(tmp_path, ""), {}).kafka.schema_registry.url is None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{url: 'ftp://registry'}", "must start with https://"),
        ("{url: 'https://r', basic_auth_user: svc}", "go together"),
        ("{url: 'https://r', ssl_key_location: /k}", "needs ssl_certificate_location"),
        (
            "{url: 'http://registry:8081', basic_auth_user: u, basic_auth_password_file: /p}",
            "clear text",
        ),
        ("{url: 'https://r', timeout_s: 0}", "greater than 0"),
        ("{url: 'https://r', password: x}", "Extra inputs are not permitted"),
    ],
)
def test_bad_schema_registry_settings_are_refused(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, f"kafka:\n  schema_registry: {text}\n")
    [problem] = problems_of(path)
    assert fragment in problem
    assert f"{path}:2: kafka.schema_registry" in problem


def test_the_registry_password_in_yaml_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = write(tmp_path, f"kafka:\n  schema_registry:\n    basic_auth_password: {SECRET}\n")
    [problem] = problems_of(path)
    assert "basic_auth_password_file" in problem
    assert SECRET not in problem


def test_the_registry_password_is_read_from_its_file(tmp_path: Path) -> None:
    from consumer.schemas.registry import client_config  # noqa: PLC0415

    (tmp_path / "pw").write_text(f"{SECRET}\n", encoding="utf-8")
    text = (
        "kafka:\n  schema_registry:\n    url: https://r\n    basic_auth_user: svc\n"
        f"    basic_auth_password_file: {tmp_path / 'pw'}\n"
    )
    registry = load_settings(write(tmp_path, text), {}).kafka.schema_registry
    assert client_config(registry)["basic.auth.user.info"] == f"svc:{SECRET}"
    assert SECRET not in repr(registry)
