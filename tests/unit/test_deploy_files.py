"""Deployment files agree with each other and with the code: k8s/, alerts, Dockerfile.

The Kubernetes checks run on what Kustomize outputs for k8s/base and for every overlay under
k8s/overlays/ (scripts/check-k8s builds them; it also validates them against the schemas, see
test_k8s_package.py), so they hold for what is really applied, patches included.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import sys
import tomllib
from dataclasses import dataclass
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType
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
# The whole workspace's Braze budget (requests per hour) the replicas share.
WORKSPACE_BUDGET = 250_000

Manifest = dict[str, Any]  # parsed YAML: Any is honest here, the tests check the shape


def load_script(name: str) -> ModuleType:
    """A script of scripts/ (no .py suffix) as a module, loaded once."""
    module_name = "scripts_" + name.replace("-", "_")
    if module_name in sys.modules:
        return sys.modules[module_name]
    loader = SourceFileLoader(module_name, str(ROOT / "scripts" / name))
    spec = importlib.util.spec_from_loader(module_name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while it runs
    loader.exec_module(module)
    return module


CHECK_K8S = load_script("check-k8s")
TARGETS: list[Path] = CHECK_K8S.kustomize_dirs()


@dataclass(frozen=True)
class Build:
    """The objects `kustomize build` outputs for one folder."""

    name: str
    objects: tuple[Manifest, ...]

    def all(self, kind: str) -> list[Manifest]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> Manifest:
        found = [o for o in self.all(kind) if name in (None, o["metadata"]["name"])]
        assert len(found) == 1, f"{self.name}: {len(found)} {kind} {name or ''}"
        return found[0]

    @property
    def deployment(self) -> Manifest:
        return self.one("Deployment")

    @property
    def pod(self) -> Manifest:
        template: Manifest = self.deployment["spec"]["template"]
        return template

    @property
    def container(self) -> Manifest:
        container: Manifest = self.pod["spec"]["containers"][0]
        return container

    def volume(self, name: str) -> Manifest:
        return next(v for v in self.pod["spec"]["volumes"] if v["name"] == name)

    def mount(self, name: str) -> Manifest:
        return next(m for m in self.container["volumeMounts"] if m["name"] == name)

    def configmap_of_volume(self, name: str) -> Manifest:
        """The ConfigMap a pod volume names (generated ones carry a hash suffix)."""
        return self.one("ConfigMap", self.volume(name)["configMap"]["name"])

    @property
    def settings_text(self) -> str:
        text: str = self.configmap_of_volume("settings")["data"]["consumer.yaml"]
        return text

    def environ(self) -> dict[str, str]:
        """The container's environment; a value from a Secret or a field is a placeholder."""
        return {e["name"]: e.get("value", "from-" + next(iter(e))) for e in self.container["env"]}

    def max_replicas(self) -> int:
        """The most pods that can run: the Deployment's count or the autoscaler's maximum."""
        counts = [int(self.deployment["spec"].get("replicas", 1))]
        counts += [int(s["spec"]["maxReplicaCount"]) for s in self.all("ScaledObject")]
        return max(counts)


@functools.cache
def build(directory: Path) -> Build:
    objects: list[Manifest] = CHECK_K8S.build(directory)
    return Build(str(directory.relative_to(ROOT)), tuple(objects))


@pytest.fixture(params=TARGETS, ids=lambda p: str(p.relative_to(K8S)))
def k8s(request: pytest.FixtureRequest) -> Build:
    directory: Path = request.param
    return build(directory)


def settings(k8s: Build, tmp_path: Path) -> Settings:
    """The settings exactly as the service loads them: the mounted file plus the env."""
    path = tmp_path / "consumer.yaml"
    path.write_text(k8s.settings_text, encoding="utf-8")
    return load_settings(path, environ=k8s.environ())


ALERT_RULES = [
    r for g in yaml.safe_load((K8S / "alerts.yaml").read_text())["groups"] for r in g["rules"]
]


def test_every_overlay_is_built() -> None:
    names = [str(p.relative_to(K8S)) for p in TARGETS]
    assert names[0] == "base"
    assert "overlays/example" in names


def test_settings_configmap_loads_with_the_real_loader(k8s: Build, tmp_path: Path) -> None:
    loaded = settings(k8s, tmp_path)
    assert loaded.rules == Path(f"{CONFIG_DIR}/rules")
    assert loaded.metrics.port == 9464


def test_rules_configmap_loads_as_kubelet_mounts_it(k8s: Build, tmp_path: Path) -> None:
    # A ConfigMap volume is a folder of symlinks into a hidden, timestamped folder.
    data = k8s.configmap_of_volume("rules")["data"]
    stamped = tmp_path / "..2024_01_01_00_00_00.000000001"
    stamped.mkdir()
    (tmp_path / "..data").symlink_to(stamped.name)
    for name, text in data.items():
        (stamped / name).write_text(text, encoding="utf-8")
        (tmp_path / name).symlink_to(f"..data/{name}")
    table = load_rules(tmp_path)
    assert table.rule_ids == ("order-shipped",)


def test_config_paths_line_up(k8s: Build, tmp_path: Path) -> None:
    assert k8s.container["args"] == ["run", "--config", f"{CONFIG_DIR}/consumer.yaml"]
    assert k8s.mount("settings")["mountPath"] == f"{CONFIG_DIR}/consumer.yaml"
    assert k8s.volume("settings")["configMap"]["name"].startswith("braze-consumer-settings")
    assert k8s.mount("rules")["mountPath"] == str(settings(k8s, tmp_path).rules)
    assert k8s.volume("rules")["configMap"]["name"] == "braze-consumer-rules"


def test_rules_configmap_keeps_its_name_for_live_reloads(k8s: Build) -> None:
    # The service reloads rules while running: a hashed (generated) name would restart the
    # pods on every rules change instead, and a subPath mount would never see the change.
    assert "rules" in {v["name"] for v in k8s.pod["spec"]["volumes"]}
    assert "subPath" not in k8s.mount("rules")
    assert k8s.one("ConfigMap", "braze-consumer-rules")


def test_files_the_settings_name_are_mounted(k8s: Build, tmp_path: Path) -> None:
    # Each path in the settings (rules, API key, a Kafka CA certificate...) lies in a volume.
    loaded = settings(k8s, tmp_path)
    paths = [str(loaded.rules), str(loaded.braze.api_key_file)]
    paths += [str(v) for k, v in loaded.kafka.client.items() if k.endswith(".location")]
    mounts = [m["mountPath"] for m in k8s.container["volumeMounts"]]
    for path in paths:
        assert any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts), path


def test_kafka_ca_certificate_comes_from_a_secret_volume(k8s: Build, tmp_path: Path) -> None:
    client = settings(k8s, tmp_path).kafka.client
    if "ssl.ca.location" not in client:
        pytest.skip(f"{k8s.name} sets no kafka.client ssl.ca.location")
    assert str(client["security.protocol"]).upper() in {"SSL", "SASL_SSL"}
    location = Path(str(client["ssl.ca.location"]))
    [mount] = [m for m in k8s.container["volumeMounts"] if m["mountPath"] == str(location.parent)]
    assert mount["readOnly"] is True
    assert "subPath" not in mount  # a renewed CA reaches the pod
    secret = k8s.volume(mount["name"])["secret"]
    if "items" in secret:
        assert location.name in {i["path"] for i in secret["items"]}


def test_metrics_port_matches_settings_service_and_monitor(k8s: Build, tmp_path: Path) -> None:
    port = settings(k8s, tmp_path).metrics.port
    ports = {p["name"]: p["containerPort"] for p in k8s.container["ports"]}
    assert ports == {"metrics": port}
    assert k8s.one("Service")["spec"]["ports"][0]["targetPort"] == "metrics"
    endpoint = k8s.one("PodMonitor")["spec"]["podMetricsEndpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    ingress = k8s.one("NetworkPolicy")["spec"]["ingress"]
    assert {p["port"] for rule in ingress for p in rule["ports"]} == {port}


@pytest.mark.parametrize(
    ("probe", "path"),
    [
        pytest.param("livenessProbe", "/healthz", id="liveness"),
        pytest.param("readinessProbe", "/readyz", id="readiness"),
        pytest.param("startupProbe", "/healthz", id="startup"),
    ],
)
def test_probes(k8s: Build, probe: str, path: str) -> None:
    assert k8s.container[probe]["httpGet"] == {"path": path, "port": "metrics"}


def test_startup_probe_waits_for_a_large_rules_file(k8s: Build) -> None:
    # The rules load before the metrics port opens; until the startup probe passes, liveness
    # does not run, so a slow start is not killed and restarted in a loop.
    startup = k8s.container["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 120
    assert "initialDelaySeconds" not in k8s.container["livenessProbe"]


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("Service", id="service"),
        pytest.param("PodMonitor", id="pod monitor"),
        pytest.param("PodDisruptionBudget", id="pdb"),
        pytest.param("Deployment", id="deployment"),
        pytest.param("NetworkPolicy", id="network policy"),
    ],
)
def test_selectors_match_the_pods(k8s: Build, kind: str) -> None:
    spec = k8s.one(kind)["spec"]
    selector = spec.get("selector", spec.get("podSelector"))
    selector = selector.get("matchLabels", selector)
    assert selector
    assert selector.items() <= k8s.pod["metadata"]["labels"].items()


def test_alerts_select_the_job_the_pod_monitor_sets(k8s: Build) -> None:
    job = k8s.pod["metadata"]["labels"][k8s.one("PodMonitor")["spec"]["jobLabel"]]
    jobs = {j for r in ALERT_RULES for j in re.findall(r'job="([^"]+)"', r["expr"])}
    assert jobs == {job}


def test_api_key_only_from_a_mounted_secret_file(k8s: Build) -> None:
    # A file, not an environment variable: a rotated Secret reaches a mounted volume (one without
    # subPath), and the service re-reads braze.api_key_file after a 401/403.
    env = {e["name"] for e in k8s.container["env"]}
    assert "BRAZE_API_KEY" not in env
    assert k8s.volume("api-key")["secret"]["secretName"] == "braze-consumer-api-key"
    mount = k8s.mount("api-key")
    assert "subPath" not in mount
    assert mount["readOnly"] is True
    braze = yaml.safe_load(k8s.settings_text)["braze"]
    assert braze["api_key_file"] == mount["mountPath"] + "/api-key"
    assert not k8s.all("Secret")  # Secrets are created by hand, never committed
    assert "api_key" not in braze


def committed_deploy_files() -> list[Path]:
    # k8s/grafana/ has its own owners and checks.
    files = [*K8S.glob("*.yaml"), *(K8S / "base").rglob("*"), *(K8S / "overlays").rglob("*")]
    return [*sorted(p for p in files if p.is_file()), ROOT / "Dockerfile"]


@pytest.mark.parametrize(
    "path", [pytest.param(p, id=str(p.relative_to(ROOT))) for p in committed_deploy_files()]
)
def test_no_key_shaped_literal(path: Path) -> None:
    assert not UUID.search(path.read_text(encoding="utf-8"))


def test_replicas_together_stay_within_the_workspace_budget(k8s: Build, tmp_path: Path) -> None:
    # requests_per_hour is the whole deployment's budget, which the replicas split by the
    # partitions each holds (consumer/budget_share.py): however many run (an autoscaler's
    # maximum included), together they spend at most this, so it must fit the workspace.
    assert settings(k8s, tmp_path).braze.requests_per_hour <= WORKSPACE_BUDGET


def test_grace_period_outlasts_the_drain(k8s: Build, tmp_path: Path) -> None:
    shutdown = settings(k8s, tmp_path).shutdown
    assert shutdown.drain_timeout_s >= 30
    budget_s = shutdown.drain_timeout_s + shutdown.revoke_timeout_s
    assert k8s.pod["spec"]["terminationGracePeriodSeconds"] >= budget_s + 10


def test_runs_locked_down(k8s: Build) -> None:
    pod_sc, sc = k8s.pod["spec"]["securityContext"], k8s.container["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] != 0
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert k8s.pod["spec"]["automountServiceAccountToken"] is False
    assert "memory" in k8s.container["resources"]["limits"]
    assert {"cpu", "memory"} <= k8s.container["resources"]["requests"].keys()


def exposed_metric_names() -> set[str]:
    text = Metrics().render().decode()
    names = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    return names | {f"{n}_{s}" for n in names for s in ("bucket", "count", "sum")}


@pytest.mark.parametrize("rule", [pytest.param(r, id=r["alert"]) for r in ALERT_RULES])
def test_alert_uses_real_metrics_and_is_documented(rule: Manifest) -> None:
    used = set(re.findall(r"\bbraze_consumer_\w+", rule["expr"]))
    assert used <= exposed_metric_names()
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert {"summary", "description"} <= rule["annotations"].keys()
    url = rule["annotations"]["runbook_url"]
    page, _, anchor = url.partition("#")
    assert page.endswith("/docs/runbook.md")
    assert anchor == rule["alert"].lower()
    assert f"\n## {rule['alert']}\n" in (ROOT / "docs" / "runbook.md").read_text(encoding="utf-8")


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


def test_dockerfile_matches_the_deployment(k8s: Build, tmp_path: Path) -> None:
    steps = dockerfile_instructions()
    last = dict(steps)  # the last instruction of each kind wins, as in Docker
    assert [arg.split()[0] for op, arg in steps if op == "FROM"] == ["python:3.11-slim"] * 2
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(last["ENTRYPOINT"]) == list(scripts)
    assert json.loads(last["CMD"]) == k8s.container["args"]
    assert int(last["EXPOSE"]) == settings(k8s, tmp_path).metrics.port
    assert last["USER"].split(":")[0] == str(k8s.pod["spec"]["securityContext"]["runAsUser"])
