"""deploy/kubernetes/ says how the service runs in a cluster: valid resources (kubernetes-validate,
offline, against the Kubernetes release the Makefile's K8S_VERSION names), the gateway and the
metrics endpoints on the pod's addresses with auth on, the exchange's keys only where the
exchange is called, and a NetworkPolicy fencing every pod.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
ROLES = {"gateway": 3, "worker": 2, "listener": 2, "dashboard": 1}  # and their replicas
EXCHANGE_ROLES = {"gateway", "worker", "listener"}  # the roles that call the exchange
BINANCE_KEYS = {"BINANCE_API_KEY": "api-key", "BINANCE_SECRET_KEY": "secret-key"}


def _manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict), path
            assert doc.get("apiVersion") and doc.get("kind"), path
            docs.append(doc)
    return docs


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in _manifests() if d["kind"] == kind]


def _find(kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in _of_kind(kind) if d["metadata"]["name"] == name]
    return doc


def _container(name: str) -> dict[str, Any]:
    containers = _find("Deployment", name)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _kustomization() -> dict[str, Any]:
    [kustomization] = _of_kind("Kustomization")
    return kustomization


def test_kustomization_lists_every_manifest() -> None:
    files = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(_kustomization()["resources"]) == files


# --- kubernetes-validate --------------------------------------------------------------------


def _k8s_version() -> str:
    """The Makefile's K8S_VERSION: `make lint` and this test validate against the same release."""
    match = re.search(r"(?m)^K8S_VERSION\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text())
    assert match, "Makefile: K8S_VERSION"
    return match.group(1)


def _validate(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    tool = Path(sys.executable).parent / "kubernetes-validate"
    command = str(tool) if tool.exists() else shutil.which("kubernetes-validate")
    if command is None:
        pytest.fail("kubernetes-validate is a dev dependency: run make setup")
    # --quiet prints only warnings and errors; a kind without a schema is only a warning (exit 0).
    return subprocess.run(
        [command, "--strict", "--quiet", "-k", _k8s_version(), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_resource_validates_against_the_pinned_kubernetes_release() -> None:
    resources = [KUBERNETES / name for name in _kustomization()["resources"]]
    done = _validate(resources)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_validation_would_report_a_misspelt_field_and_an_unknown_api(tmp_path: Path) -> None:
    policy = yaml.safe_load((KUBERNETES / "networkpolicy.yaml").read_text().split("---")[0])
    policy["spec"]["policyType"] = policy["spec"].pop("policyTypes")
    (tmp_path / "misspelt.yaml").write_text(yaml.safe_dump(policy))
    (tmp_path / "unknown.yaml").write_text(yaml.safe_dump({**policy, "apiVersion": "networking.k8s.io/v9"}))
    done = _validate([tmp_path / "misspelt.yaml"])
    assert done.returncode != 0 and "policyType" in done.stdout, done.stdout
    done = _validate([tmp_path / "unknown.yaml"])  # exit 0: why any output fails `make lint` and this test
    assert "Couldn't find schema" in done.stdout, done.stdout


# --- roles, secrets, addresses ---------------------------------------------------------------


def test_gateway_has_the_seeds_ports_and_probes_behind_a_service() -> None:
    gateway = _container("order-execution-gateway")
    assert gateway["args"] == ["gateway"]
    assert {(p["name"], p["containerPort"]) for p in gateway["ports"]} == {("grpc", 50051), ("http", 9091)}
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": 9091}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": 9091}
    assert gateway["livenessProbe"]["periodSeconds"] == 10
    assert gateway["readinessProbe"]["periodSeconds"] == 5
    service = _find("Service", "order-execution")
    assert {p["port"] for p in service["spec"]["ports"]} == {50051, 9091}
    assert (
        service["spec"]["selector"]
        == _find("Deployment", "order-execution-gateway")["spec"]["selector"]["matchLabels"]
    )


def test_every_role_runs_non_root_with_the_shared_settings() -> None:
    for role, replicas in ROLES.items():
        deployment = _find("Deployment", f"order-execution-{role}")
        assert deployment["spec"]["replicas"] == replicas, role
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
        container = _container(f"order-execution-{role}")
        assert container["args"][0] == role
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert {"configMapRef": {"name": "order-execution-env"}} in container["envFrom"]
    assert not _of_kind("Secret"), "no secret values in Git"


def test_only_the_roles_that_call_the_exchange_get_its_keys_from_the_secret() -> None:
    for role in ROLES:
        container = _container(f"order-execution-{role}")
        env = {e["name"]: e for e in container.get("env", [])}
        referenced = {
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in env.values()
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        if role in EXCHANGE_ROLES:
            for name, key in BINANCE_KEYS.items():
                assert "value" not in env[name]
                assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "binance-credentials", "key": key}
        else:
            assert not set(BINANCE_KEYS) & set(env), role
            assert "binance-credentials" not in referenced, role
            assert not [s for s in container.get("envFrom", []) if "secretRef" in s], role


def test_the_configmaps_hold_the_seeds_names_and_a_valid_config_with_auth_on() -> None:
    env = _find("ConfigMap", "order-execution-env")["data"]
    assert {"REDIS_ADDRESS", "NATS_ADDRESS", "LOG_LEVEL", "LOG_FORMAT", "ORDER_EXECUTION_CONFIG"} <= set(env)
    assert not {"BINANCE_API_KEY", "BINANCE_SECRET_KEY"} & set(env)
    config = yaml.safe_load(_find("ConfigMap", "order-execution-config")["data"]["config.yaml"])
    from order_execution.runtime.settings import Settings

    settings = Settings.model_validate(config)  # every key is one the service knows
    assert config["auth"]["enabled"] is True and settings.auth.enabled
    assert "ORDER_EXECUTION__AUTH__ENABLED" not in env  # nothing turns it off behind the file's back


def test_the_gateway_and_the_metrics_endpoints_listen_on_the_pods_addresses() -> None:
    # server.host is where the gateway's gRPC and HTTP ports and the worker and listener /metrics
    # bind; set explicitly, since its default is loopback-only (unreachable from the Service).
    env = _find("ConfigMap", "order-execution-env")["data"]
    assert env["ORDER_EXECUTION__SERVER__HOST"] == "0.0.0.0"
    for role in EXCHANGE_ROLES:
        container = _container(f"order-execution-{role}")
        assert {"configMapRef": {"name": "order-execution-env"}} in container["envFrom"], role
        assert "ORDER_EXECUTION__SERVER__HOST" not in {e["name"] for e in container.get("env", [])}, role
    dashboard = {e["name"]: e for e in _container("order-execution-dashboard")["env"]}
    assert dashboard["ORDER_EXECUTION__DASHBOARD__HOST"]["value"] == "0.0.0.0"


# --- NetworkPolicy ----------------------------------------------------------------------------


def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"]
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are read here"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _policies_for(role: str) -> list[dict[str, Any]]:
    labels = _find("Deployment", f"order-execution-{role}")["spec"]["template"]["metadata"]["labels"]
    return [p for p in _of_kind("NetworkPolicy") if _selects(p, labels)]


def _ports(rules: list[dict[str, Any]]) -> set[int]:
    return {port["port"] for rule in rules for port in rule.get("ports", [])}


def test_every_deployment_is_selected_by_a_default_deny_and_its_own_policy() -> None:
    deployments = {d["metadata"]["name"] for d in _of_kind("Deployment")}
    assert deployments == {f"order-execution-{role}" for role in ROLES}
    for role in ROLES:
        policies = _policies_for(role)
        deny = [p for p in policies if "ingress" not in p["spec"] and "egress" not in p["spec"]]
        assert deny and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}, role
        assert len(policies) == 2, (role, [p["metadata"]["name"] for p in policies])


def test_each_role_accepts_only_its_own_ports() -> None:
    # gRPC and HTTP (health, /metrics); /metrics; /metrics; the dashboard
    wanted = {"gateway": {50051, 9091}, "worker": {9095}, "listener": {9094}, "dashboard": {9181}}
    for role, expected in wanted.items():
        ingress = [rule for p in _policies_for(role) for rule in p["spec"].get("ingress", [])]
        assert _ports(ingress) == expected, role
        for rule in ingress:
            assert rule.get("from"), (role, "a rule without `from` admits everyone")
        container_ports = {p["containerPort"] for p in _container(f"order-execution-{role}").get("ports", [])}
        assert expected <= container_ports, role


def test_egress_reaches_the_exchange_only_from_the_roles_that_call_it() -> None:
    for role in ROLES:
        egress = [rule for p in _policies_for(role) for rule in p["spec"].get("egress", [])]
        assert {53, 6379} <= _ports(egress), role
        assert (443 in _ports(egress)) == (role in EXCHANGE_ROLES), role
        for rule in egress:
            assert rule.get("to"), (role, "an egress rule without `to` reaches everywhere")
            for peer in rule["to"]:
                if "ipBlock" in peer:  # the exchange: public addresses, not the cluster's own
                    assert "10.0.0.0/8" in peer["ipBlock"]["except"], role
    assert 4222 not in _ports(
        [rule for p in _policies_for("dashboard") for rule in p["spec"].get("egress", [])]
    )
