"""Deployment files agree with each other and with the code: k8s/, alerts, Dockerfile."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.metrics import Metrics
from consumer.rules import load_rules
from consumer.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
CONFIG_DIR = "/etc/braze-consumer"
# A Braze REST API key is a UUID; nothing shaped like one belongs in a committed file.
UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)

Manifest = dict[str, Any]  # parsed YAML: Any is honest here, the tests check the shape


def manifests() -> dict[str, Manifest]:
    """Kubernetes objects from every k8s/*.yaml, by `Kind` (when one of a kind) and `Kind/name`."""
    found: dict[str, Manifest] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(doc, dict) and "metadata" in doc and "kind" in doc:
                kind = doc["kind"]
                found[f"{kind}/{doc['metadata']['name']}"] = doc
                found[kind] = doc if kind not in found else {}  # {} marks "several"
    return found


OBJECTS = manifests()
POD = OBJECTS["Deployment"]["spec"]["template"]
CONTAINER = POD["spec"]["containers"][0]
SETTINGS_TEXT = OBJECTS["ConfigMap/braze-consumer-settings"]["data"]["consumer.yaml"]
ALERT_RULES = [
    r for g in yaml.safe_load((K8S / "alerts.yaml").read_text())["groups"] for r in g["rules"]
]


def settings() -> Settings:
    raw = yaml.safe_load(SETTINGS_TEXT)
    return Settings.model_validate(raw)


def mount(name: str) -> Manifest:
    return next(m for m in CONTAINER["volumeMounts"] if m["name"] == name)


def volume(name: str) -> Manifest:
    return next(v for v in POD["spec"]["volumes"] if v["name"] == name)


def test_settings_configmap_loads_with_the_real_loader(tmp_path: Path) -> None:
    path = tmp_path / "consumer.yaml"
    path.write_text(SETTINGS_TEXT, encoding="utf-8")
    loaded = load_settings(path, environ={})
    assert loaded.rules == Path(f"{CONFIG_DIR}/rules")
    assert loaded.metrics.port == 9464


def test_rules_configmap_loads_as_kubelet_mounts_it(tmp_path: Path) -> None:
    # A ConfigMap volume is a folder of symlinks into a hidden, timestamped folder.
    data = OBJECTS["ConfigMap/braze-consumer-rules"]["data"]
    stamped = tmp_path / "..2024_01_01_00_00_00.000000001"
    stamped.mkdir()
    (tmp_path / "..data").symlink_to(stamped.name)
    for name, text in data.items():
        (stamped / name).write_text(text, encoding="utf-8")
        (tmp_path / name).symlink_to(f"..data/{name}")
    table = load_rules(tmp_path)
    assert table.rule_ids == ("order-shipped",)


def test_config_paths_line_up() -> None:
    assert CONTAINER["args"] == ["run", "--config", f"{CONFIG_DIR}/consumer.yaml"]
    assert mount("settings")["mountPath"] == f"{CONFIG_DIR}/consumer.yaml"
    assert volume("settings")["configMap"]["name"] == "braze-consumer-settings"
    assert mount("rules")["mountPath"] == str(settings().rules)
    assert volume("rules")["configMap"]["name"] == "braze-consumer-rules"


def test_metrics_port_matches_settings_service_and_monitor() -> None:
    port = settings().metrics.port
    ports = {p["name"]: p["containerPort"] for p in CONTAINER["ports"]}
    assert ports == {"metrics": port}
    assert OBJECTS["Service"]["spec"]["ports"][0]["targetPort"] == "metrics"
    endpoint = OBJECTS["PodMonitor"]["spec"]["podMetricsEndpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")


@pytest.mark.parametrize(
    ("probe", "path"),
    [
        pytest.param("livenessProbe", "/healthz", id="liveness"),
        pytest.param("readinessProbe", "/readyz", id="readiness"),
    ],
)
def test_probes(probe: str, path: str) -> None:
    assert CONTAINER[probe]["httpGet"] == {"path": path, "port": "metrics"}


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("Service", id="service"),
        pytest.param("PodMonitor", id="pod monitor"),
        pytest.param("PodDisruptionBudget", id="pdb"),
        pytest.param("Deployment", id="deployment"),
    ],
)
def test_selectors_match_the_pods(kind: str) -> None:
    spec = OBJECTS[kind]["spec"]
    selector = spec["selector"].get("matchLabels", spec["selector"])
    assert selector.items() <= POD["metadata"]["labels"].items()


def test_alerts_select_the_job_the_pod_monitor_sets() -> None:
    job = POD["metadata"]["labels"][OBJECTS["PodMonitor"]["spec"]["jobLabel"]]
    jobs = {j for r in ALERT_RULES for j in re.findall(r'job="([^"]+)"', r["expr"])}
    assert jobs == {job}


def test_api_key_only_from_a_mounted_secret_file() -> None:
    # A file, not an environment variable: a rotated Secret reaches a mounted volume (one without
    # subPath), and the service re-reads braze.api_key_file after a 401/403.
    env = {e["name"] for e in CONTAINER["env"]}
    assert "BRAZE_API_KEY" not in env
    volumes = {v["name"]: v for v in OBJECTS["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["api-key"]["secret"]["secretName"] == "braze-consumer-api-key"
    [mount] = [m for m in CONTAINER["volumeMounts"] if m["name"] == "api-key"]
    assert "subPath" not in mount
    assert mount["readOnly"] is True
    braze = yaml.safe_load(SETTINGS_TEXT)["braze"]
    assert braze["api_key_file"] == mount["mountPath"] + "/api-key"
    assert "Secret" not in OBJECTS  # the Secret is created by hand, never committed
    assert "api_key" not in braze


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, id=p.name) for p in [*sorted(K8S.glob("*.yaml")), ROOT / "Dockerfile"]],
)
def test_no_key_shaped_literal(path: Path) -> None:
    assert not UUID.search(path.read_text(encoding="utf-8"))


def test_replicas_together_stay_within_the_workspace_budget() -> None:
    # The rate limiter is per process: N replicas each at the full budget would spend N times it.
    replicas = int(OBJECTS["Deployment"]["spec"]["replicas"])
    assert settings().braze.requests_per_hour * replicas <= 250_000


def test_grace_period_outlasts_the_drain() -> None:
    shutdown = settings().shutdown
    assert shutdown.drain_timeout_s >= 30
    budget_s = shutdown.drain_timeout_s + shutdown.revoke_timeout_s
    assert POD["spec"]["terminationGracePeriodSeconds"] >= budget_s + 10


def test_runs_locked_down() -> None:
    pod_sc, sc = POD["spec"]["securityContext"], CONTAINER["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] != 0
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "memory" in CONTAINER["resources"]["limits"]


def exposed_metric_names() -> set[str]:
    text = Metrics().render().decode()
    names = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    return names | {f"{n}_{s}" for n in names for s in ("bucket", "count", "sum")}


@pytest.mark.parametrize("rule", [pytest.param(r, id=r["alert"]) for r in ALERT_RULES])
def test_alert_uses_real_metrics_and_is_documented(rule: Manifest) -> None:
    used = set(re.findall(r"\bbraze_consumer_\w+", rule["expr"]))
    assert used <= exposed_metric_names()
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert {"summary", "description", "runbook"} <= rule["annotations"].keys()


def test_every_alert_is_unit_tested_both_ways() -> None:
    tests = yaml.safe_load((K8S / "alerts.test.yaml").read_text())["tests"]
    cases = [c for t in tests for c in t["alert_rule_test"]]
    fires = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    names = {r["alert"] for r in ALERT_RULES}
    assert fires == names
    assert quiet == names


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def test_dockerfile_matches_the_deployment() -> None:
    steps = dockerfile_instructions()
    last = dict(steps)  # the last instruction of each kind wins, as in Docker
    assert [arg.split()[0] for op, arg in steps if op == "FROM"] == ["python:3.11-slim"] * 2
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(last["ENTRYPOINT"]) == list(scripts)
    assert json.loads(last["CMD"]) == CONTAINER["args"]
    assert int(last["EXPOSE"]) == settings().metrics.port
    assert last["USER"].split(":")[0] == str(POD["spec"]["securityContext"]["runAsUser"])
