"""The Kustomize package in k8s/: every folder builds and validates, and what the schemas cannot
check is checked here.

scripts/check-k8s builds k8s/base and every overlay with Kustomize and validates each object
against the Kubernetes JSON schemas (PyPI's kubernetes-validate, offline). The custom resources
of the operators (prometheus-operator's PodMonitor and PrometheusRule, KEDA's ScaledObject and
TriggerAuthentication) have no schema there: the script skips them by kind and says so, and the
structural tests below check their apiVersion, kind and required fields instead. Then the
NetworkPolicy, the autoscaler and the overlays are checked against what the service needs.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.rules import load_rules_text
from tests.unit.test_deploy_files import (
    CHECK_K8S,
    K8S,
    ROOT,
    TARGETS,
    Build,
    Manifest,
    build,
    load_script,
    settings,
)

GEN_RULE = load_script("gen-prometheusrule")
CUSTOM_RESOURCES = {
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
}
OVERLAYS = [t for t in TARGETS if t.parent.name == "overlays"]
PARTITIONS_ANNOTATION = "braze-trigger-consumer/topic-partitions"


@pytest.fixture(params=TARGETS, ids=lambda p: str(p.relative_to(K8S)))
def k8s(request: pytest.FixtureRequest) -> Build:
    directory: Path = request.param
    return build(directory)


@pytest.fixture(params=OVERLAYS, ids=lambda p: str(p.relative_to(K8S)))
def overlay(request: pytest.FixtureRequest) -> Build:
    directory: Path = request.param
    return build(directory)


def field(obj: Manifest, path: str) -> Any:
    """The value at a dotted path, failing with the path when a part is missing."""
    node: Any = obj
    for part in path.split("."):
        assert isinstance(node, dict), f"{path}: {part} is not in a mapping"
        assert part in node, f"{obj.get('kind')}/{obj['metadata']['name']}: no {path}"
        node = node[part]
    return node


# --- scripts/check-k8s: build and schema validation ----------------------------------------


def test_check_k8s_builds_and_validates_every_folder() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check-k8s")],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for target in TARGETS:
        assert f"ok   {target.relative_to(ROOT)}: " in done.stdout
    assert "INVALID" not in done.stdout
    # The skipped custom resources are named, never silently passed.
    for _, kind in CUSTOM_RESOURCES:
        assert f"skipped (custom resource, no schema): {kind}/" in done.stdout


def test_validation_rejects_a_misspelt_field_and_a_wrong_type() -> None:
    deployment = dict(build(TARGETS[0]).deployment)
    typo = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    wrong = {**deployment, "spec": {**deployment["spec"], "replicas": "three"}}
    report = CHECK_K8S.validate([deployment, typo, wrong])
    assert report.passed == ["Deployment/braze-consumer"]
    assert len(report.errors) == 2
    assert "'replica' was unexpected" in report.errors[0]
    assert "spec.replicas" in report.errors[1]


def test_validation_skips_only_the_known_custom_resources() -> None:
    objects = [
        {"apiVersion": api, "kind": kind, "metadata": {"name": "x"}}
        for api, kind in CUSTOM_RESOURCES
    ]
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    report = CHECK_K8S.validate([*objects, unknown])
    assert len(report.skipped) == len(CUSTOM_RESOURCES)
    [error] = report.errors
    assert error.startswith("Widget/w: no schema for example.com/v1 Widget in Kubernetes 1.30")
    assert CHECK_K8S.SKIPPED_KINDS == CUSTOM_RESOURCES


def test_check_fails_when_kustomize_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    assert CHECK_K8S.check([tmp_path]) == 1
    assert "kustomize failed" in capsys.readouterr().out


def test_check_fails_on_an_invalid_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [svc.yaml]\n")
    (tmp_path / "svc.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
        "spec: {ports: [{port: metrics}]}\n"  # a Service's port is a number
    )
    assert CHECK_K8S.check([tmp_path]) == 1
    assert "INVALID Service/s: spec.ports.0.port" in capsys.readouterr().out


# --- the PrometheusRule: generated from k8s/alerts.yaml ------------------------------------


def test_prometheusrule_is_generated_from_the_current_alerts() -> None:
    # Compared as data, not text: run scripts/gen-prometheusrule after editing alerts.yaml.
    committed = yaml.safe_load((K8S / "base" / "prometheusrule.yaml").read_text())
    alerts = yaml.safe_load((K8S / "alerts.yaml").read_text())
    assert committed["spec"]["groups"] == alerts["groups"], "run scripts/gen-prometheusrule"
    assert committed == GEN_RULE.prometheus_rule(alerts)
    assert yaml.safe_load(GEN_RULE.render()) == committed


def test_prometheusrule_is_deployed_with_the_alerts(k8s: Build) -> None:
    rule = k8s.one("PrometheusRule")
    alerts = yaml.safe_load((K8S / "alerts.yaml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]


# --- custom resources: structure (no schema in kubernetes-validate) ------------------------


def test_custom_resources_have_known_api_versions(k8s: Build) -> None:
    for obj in k8s.objects:
        if obj["kind"] in {kind for _, kind in CUSTOM_RESOURCES}:
            assert (obj["apiVersion"], obj["kind"]) in CUSTOM_RESOURCES
            assert obj["metadata"]["name"]
            assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "braze-consumer"


def test_pod_monitor_structure(k8s: Build) -> None:
    monitor = k8s.one("PodMonitor")
    assert isinstance(field(monitor, "spec.selector.matchLabels"), dict)
    [endpoint] = field(monitor, "spec.podMetricsEndpoints")
    assert isinstance(endpoint["port"], str)  # a port name (targetPort is deprecated)
    assert endpoint["interval"].endswith("s")


def test_prometheusrule_structure(k8s: Build) -> None:
    groups = field(k8s.one("PrometheusRule"), "spec.groups")
    assert groups
    assert len({g["name"] for g in groups}) == len(groups)
    for group in groups:
        assert group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "record", "expr", "for", "labels", "annotations"}
            assert ("alert" in rule) != ("record" in rule)
            assert isinstance(rule["expr"], str)
            assert all(isinstance(v, str) for v in rule.get("labels", {}).values())
            assert all(isinstance(v, str) for v in rule.get("annotations", {}).values())


def test_keda_objects_structure(k8s: Build) -> None:
    for scaled in k8s.all("ScaledObject"):
        assert isinstance(field(scaled, "spec.scaleTargetRef.name"), str)
        assert isinstance(field(scaled, "spec.minReplicaCount"), int)
        assert isinstance(field(scaled, "spec.maxReplicaCount"), int)
        for trigger in field(scaled, "spec.triggers"):
            assert isinstance(trigger["type"], str)
            # KEDA's schema types metadata as a map of strings: an unquoted number is refused.
            assert all(isinstance(v, str) for v in trigger["metadata"].values()), trigger
            if "authenticationRef" in trigger:
                k8s.one("TriggerAuthentication", trigger["authenticationRef"]["name"])
    for auth in k8s.all("TriggerAuthentication"):
        for ref in field(auth, "spec.secretTargetRef"):
            assert {"parameter", "name", "key"} == set(ref)


# --- the NetworkPolicy: Kafka, Braze and DNS out; metrics in from monitoring ---------------


def network_policy(k8s: Build) -> Manifest:
    return k8s.one("NetworkPolicy")


def test_network_policy_denies_by_default_both_ways(k8s: Build) -> None:
    spec = network_policy(k8s)["spec"]
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    # A rule without `ports` or without `to`/`from` would allow everything: none here.
    for rule in spec["ingress"]:
        assert rule["ports"]
        assert rule["from"]
    for rule in spec["egress"]:
        assert rule["ports"]
        assert rule["to"]


def test_network_policy_ingress_is_metrics_from_monitoring(k8s: Build, tmp_path: Path) -> None:
    [rule] = network_policy(k8s)["spec"]["ingress"]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    assert rule["ports"] == [{"protocol": "TCP", "port": settings(k8s, tmp_path).metrics.port}]


def egress_ports(k8s: Build) -> dict[tuple[str, int], list[Manifest]]:
    """(protocol, port) -> the peers allowed on it."""
    found: dict[tuple[str, int], list[Manifest]] = {}
    for rule in network_policy(k8s)["spec"]["egress"]:
        for port in rule["ports"]:
            found.setdefault((port["protocol"], port["port"]), []).extend(rule["to"])
    return found


def test_network_policy_egress_is_kafka_braze_and_dns_only(k8s: Build, tmp_path: Path) -> None:
    ports = egress_ports(k8s)
    kafka = {p for p in ports if p[1] not in {443, 53}}
    assert ports.keys() == {("TCP", 443), ("UDP", 53), ("TCP", 53), *kafka}
    bootstrap_port = int(settings(k8s, tmp_path).kafka.bootstrap_servers.rsplit(":", 1)[1])
    assert ("TCP", bootstrap_port) in kafka
    assert all(proto == "TCP" for proto, _ in kafka)
    open_to_all = {"0.0.0.0/0", "::/0"}
    for port in kafka:
        for peer in ports[port]:
            assert peer.get("ipBlock", {}).get("cidr") not in open_to_all, "Kafka: too wide"


def test_network_policy_braze_https_skips_private_ranges(k8s: Build) -> None:
    peers = egress_ports(k8s)[("TCP", 443)]
    blocks = {p["ipBlock"]["cidr"]: p["ipBlock"].get("except", []) for p in peers}
    assert all("ipBlock" in p for p in peers)
    v4_private = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"]
    assert set(v4_private) <= set(blocks["0.0.0.0/0"])
    for cidr, excepted in blocks.items():
        network = ipaddress.ip_network(cidr)
        for inner in map(ipaddress.ip_network, excepted):
            # `except` must lie inside `cidr`, or the API server refuses the policy.
            assert inner.version == network.version
            assert inner.network_address in network
            assert inner.prefixlen >= network.prefixlen


def test_network_policy_dns_goes_to_kube_dns(k8s: Build) -> None:
    ports = egress_ports(k8s)
    assert ports[("UDP", 53)] == ports[("TCP", 53)]
    [peer] = ports[("UDP", 53)]
    assert peer == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }


# --- the autoscaler -------------------------------------------------------------------------


def test_the_example_overlay_autoscales() -> None:
    assert len(build(K8S / "overlays" / "example").all("ScaledObject")) == 1


def test_overlay_scales_on_consumer_lag(overlay: Build, tmp_path: Path) -> None:
    scaled_objects = overlay.all("ScaledObject")
    if not scaled_objects:
        pytest.skip(f"{overlay.name} has a fixed replica count")
    [scaled] = scaled_objects  # two autoscalers on one Deployment would fight
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    assert (target.get("kind", "Deployment"), target["name"]) == (
        "Deployment",
        overlay.deployment["metadata"]["name"],
    )
    [trigger] = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    kafka = settings(overlay, tmp_path).kafka
    assert meta["bootstrapServers"] == kafka.bootstrap_servers
    assert meta["consumerGroup"] == kafka.group_id
    assert meta["offsetResetPolicy"] == kafka.auto_offset_reset
    assert int(meta["lagThreshold"]) > 0
    assert meta.get("allowIdleConsumers", "false") == "false"
    rules = overlay.configmap_of_volume("rules")["data"]
    topics = set().union(*(load_rules_text(text, name).topics for name, text in rules.items()))
    assert meta.get("topic", next(iter(topics))) in topics
    # KEDA reaches Kafka as the service does.
    protocol = str(kafka.client.get("security.protocol", "PLAINTEXT")).upper()
    assert (meta.get("tls") == "enable") == protocol.endswith("SSL")
    mechanism = str(kafka.client.get("sasl.mechanism", "")).lower().replace("-", "_")
    sasl = {"scram_sha_512": "scram_sha512", "scram_sha_256": "scram_sha256", "plain": "plaintext"}
    assert meta.get("sasl", "none") == (sasl[mechanism] if protocol.startswith("SASL") else "none")


def test_replicas_never_exceed_the_partition_count(overlay: Build) -> None:
    for scaled in overlay.all("ScaledObject"):
        partitions = int(scaled["metadata"]["annotations"][PARTITIONS_ANNOTATION])
        spec = scaled["spec"]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
        assert overlay.deployment["spec"]["replicas"] <= partitions


# --- the overlays: namespace, image, what differs from the base ----------------------------


def test_overlay_puts_everything_in_one_namespace(overlay: Build) -> None:
    namespaces = {o["metadata"].get("namespace") for o in overlay.objects}
    assert len(namespaces) == 1
    assert None not in namespaces
    assert not overlay.all("Namespace")  # created by hand, so `kubectl delete -k` keeps Secrets


def test_overlay_pulls_a_pinned_image_from_a_registry(overlay: Build) -> None:
    image = overlay.container["image"]
    registry, _, rest = image.partition("/")
    assert "." in registry or ":" in registry, f"{image}: no registry host"
    assert "@sha256:" in rest or (":" in rest and not rest.endswith(":latest")), image


def test_overlay_sets_replicas_budget_and_resources(overlay: Build) -> None:
    # The deployment's budget is stated, never left to the default (the workspace's whole
    # 250000, which other senders may share).
    assert "requests_per_hour" in yaml.safe_load(overlay.settings_text)["braze"]
    assert "replicas" in overlay.deployment["spec"]
    assert overlay.container["resources"]["requests"]
