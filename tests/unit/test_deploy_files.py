"""The deployment files say what the service is: docker-compose.yml (checked by Debian's
`docker-compose config`), deploy/Dockerfile, deploy/kubernetes/, the Grafana dashboard and the
Prometheus alert rules (checked by `promtool` where installed), and the README's sections
about them.

A missing `docker-compose` or `promtool` skips its check locally and fails it in CI (CI=true):
`apt-get install -y docker-compose prometheus`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.factories import SEED_METRICS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"

KNOWN_METRICS = SEED_METRICS | {
    "order_execution_orders_by_state",
    "order_execution_queue_depth",
    "order_execution_user_stream_lag_seconds",
}
_METRIC = re.compile(r"\border_execution_[a-z_]+")
_HISTOGRAM_SERIES = ("_bucket", "_count", "_sum")
ROLES = {"gateway", "worker", "listener", "dashboard"}


def _tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed; install it with: apt-get install -y {package}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def _metrics_in(expr: str) -> set[str]:
    names = set()
    for name in _METRIC.findall(expr):
        for suffix in _HISTOGRAM_SERIES:
            if name.endswith(suffix) and name.removesuffix(suffix) in KNOWN_METRICS:
                name = name.removesuffix(suffix)
        names.add(name)
    return names


# --- docker-compose.yml -----------------------------------------------------------------


def _compose_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BINANCE_", "ORDER_EXECUTION", "LOG_"))}
    return {**env, **extra}


def _compose(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    command = [_tool("docker-compose", "docker-compose"), "-f", str(ROOT / "docker-compose.yml"), *args]
    return subprocess.run(
        command, cwd=ROOT, env=_compose_env(**env), capture_output=True, text=True, timeout=60, check=False
    )


def test_docker_compose_accepts_the_file_with_or_without_the_binance_keys() -> None:
    for keys in ({}, {"BINANCE_API_KEY": "test-key", "BINANCE_SECRET_KEY": "test-secret"}):
        done = _compose("config", "-q", **keys)
        assert done.returncode == 0, done.stderr


def test_without_the_binance_keys_the_simulator_says_what_to_set() -> None:
    done = _compose("config")
    assert done.returncode == 0, done.stderr
    account = yaml.safe_load(done.stdout)["services"]["simulator"]["command"][-1]
    assert account == ":"
    refused = subprocess.run(
        [sys.executable, "-m", "simulator", "--account", account],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert "set BINANCE_API_KEY and BINANCE_SECRET_KEY" in refused.stderr


def _compose_config() -> dict[str, Any]:
    done = _compose("config", BINANCE_API_KEY="test-key", BINANCE_SECRET_KEY="test-secret")
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def test_compose_runs_the_production_shape() -> None:
    services = _compose_config()["services"]
    assert set(services) == {"redis", "nats", "simulator", "gateway", "worker", "listener", "dashboard"}
    redis_command = services["redis"]["command"]
    assert redis_command[redis_command.index("--appendonly") + 1] == "yes"
    assert "-js" in services["nats"]["command"]
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["listener"]["deploy"]["replicas"] == 2
    for name in ("redis", "nats", "simulator", "gateway", "dashboard"):
        assert services[name]["healthcheck"]["test"], name
    for name in ("simulator", *ROLES):
        service = services[name]
        assert service["image"] == "order-execution:latest"
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert services["simulator"]["command"][0] == "sim"
    assert services["dashboard"]["command"] == ["dashboard"]
    assert services["gateway"]["command"] == ["gateway"]
    for name in ROLES:  # the seed's environment names, from the environment or .env
        env = services[name]["environment"]
        assert env["BINANCE_API_KEY"] == "test-key" and env["BINANCE_SECRET_KEY"] == "test-secret"
        assert env["REDIS_ADDRESS"] == "redis:6379" and env["NATS_ADDRESS"] == "nats://nats:4222"
        assert {"LOG_LEVEL", "LOG_FORMAT", "BINANCE_TESTNET", "BINANCE_BASE_URL"} <= set(env)
        for depends in ("redis", "nats"):
            assert services[name]["depends_on"][depends]["condition"] == "service_healthy"


def test_compose_holds_no_credentials_and_publishes_on_loopback_only() -> None:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = raw["x-service"]["environment"]
    for key in ("BINANCE_API_KEY", "BINANCE_SECRET_KEY"):
        # From the environment or .env, with no default: nothing to leak, and config -q passes.
        assert env[key] == "${" + key + ":-}", env[key]
    for name, service in _compose_config()["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)


# --- deploy/Dockerfile ------------------------------------------------------------------


def _dockerfile() -> list[str]:
    return [line.strip() for line in (DEPLOY / "Dockerfile").read_text().splitlines()]


def test_the_image_is_multi_stage_slim_and_runs_as_a_user() -> None:
    lines = _dockerfile()
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) >= 2
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in lines
    assert all("${PYTHON_IMAGE}" in stage for stage in stages)
    final = lines[lines.index(stages[-1]) :]
    user = [line for line in final if line.startswith("USER ")]
    assert user and user[-1] not in ("USER root", "USER 0") and "10001" in user[-1]
    assert 'ENTRYPOINT ["order-execution"]' in final
    assert any(line.startswith("COPY --from=build /opt/venv") for line in final)


def test_the_image_generates_the_grpc_code_and_installs_the_dashboard_without_downgrades() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "grpc_tools.protoc" in text and "--grpc_python_out" in text
    assert "pip install --no-deps -r requirements-dashboard.txt" in text
    assert re.search(
        r"pip install( --quiet)? --no-deps -r requirements-dashboard.txt", (ROOT / "Makefile").read_text()
    )


def test_the_build_context_keeps_every_package() -> None:
    ignored = [
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    assert packages
    for package in packages:
        assert (ROOT / package).is_dir(), package
        assert package not in ignored, package
    for needed in ("pyproject.toml", "README.md", "requirements-dashboard.txt", "proto/order.proto"):
        assert needed not in ignored


def test_the_dashboard_is_pinned_and_its_runtime_needs_are_dependencies() -> None:
    pins = [
        line
        for line in (ROOT / "requirements-dashboard.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert pins == ["dramatiq_dashboard==0.4.0"]
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=\[ ]", d, maxsplit=1)[0].lower() for d in dependencies}
    assert {"dramatiq", "redis", "jinja2", "waitress"} <= names


# --- deploy/kubernetes ------------------------------------------------------------------


def _manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict), path
            assert doc.get("apiVersion") and doc.get("kind"), path
            docs.append(doc)
    return docs


def _find(kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in _manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _container(name: str) -> dict[str, Any]:
    containers = _find("Deployment", name)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def test_kustomization_lists_every_manifest() -> None:
    [kustomization] = [d for d in _manifests() if d["kind"] == "Kustomization"]
    files = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


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


def test_every_role_runs_non_root_with_the_binance_keys_from_a_secret() -> None:
    roles = {"gateway": 3, "worker": 2, "listener": 2, "dashboard": 1}
    for role, replicas in roles.items():
        deployment = _find("Deployment", f"order-execution-{role}")
        assert deployment["spec"]["replicas"] == replicas, role
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        container = _container(f"order-execution-{role}")
        assert container["args"][0] == role
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        env = {e["name"]: e for e in container["env"]}
        for name, key in (("BINANCE_API_KEY", "api-key"), ("BINANCE_SECRET_KEY", "secret-key")):
            assert "value" not in env[name]
            assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "binance-credentials", "key": key}
        assert {"configMapRef": {"name": "order-execution-env"}} in container["envFrom"]
    assert not [d for d in _manifests() if d["kind"] == "Secret"], "no secret values in Git"


def test_the_configmaps_hold_the_seeds_names_and_a_valid_config() -> None:
    env = _find("ConfigMap", "order-execution-env")["data"]
    assert {"REDIS_ADDRESS", "NATS_ADDRESS", "LOG_LEVEL", "LOG_FORMAT", "ORDER_EXECUTION_CONFIG"} <= set(env)
    assert not {"BINANCE_API_KEY", "BINANCE_SECRET_KEY"} & set(env)
    config = yaml.safe_load(_find("ConfigMap", "order-execution-config")["data"]["config.yaml"])
    from orders.settings import Settings

    Settings.model_validate(config)  # every key is one the service knows


# --- Grafana and Prometheus ---------------------------------------------------------------


def _grafana() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads((DEPLOY / "grafana" / "order-execution.json").read_text())
    return dashboard


def _grafana_exprs() -> dict[str, list[str]]:
    return {
        panel["title"]: [target["expr"] for target in panel["targets"]]
        for panel in _grafana()["panels"]
        if panel["type"] != "row"
    }


def test_grafana_panels_cover_what_operators_watch() -> None:
    titles = set(_grafana_exprs())
    for wanted in (
        "Order throughput",
        "Order latency",
        "Exchange requests",
        "Exchange errors",
        "Exchange latency",
        "Circuit breaker state",
        "Cache hit rate",
        "Error rates",
    ):
        assert wanted in titles
    exprs = " ".join(" ".join(e) for e in _grafana_exprs().values())
    assert "histogram_quantile(0.99, sum by (le) (rate(order_execution_order_latency_seconds_bucket" in exprs
    assert _metrics_in(exprs) >= SEED_METRICS


def test_every_grafana_expression_uses_known_metrics() -> None:
    for title, exprs in _grafana_exprs().items():
        assert exprs, title
        for expr in exprs:
            used = _metrics_in(expr)
            assert used, (title, expr)
            assert used <= KNOWN_METRICS, (title, used - KNOWN_METRICS)


def _alerts() -> list[dict[str, Any]]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_alert_rules_cover_breakers_errors_rate_limits_and_unknown_orders() -> None:
    alerts = {rule["alert"]: rule for rule in _alerts()}
    assert "order_execution_circuit_breaker_state" in alerts["OrderExecutionCircuitBreakerOpen"]["expr"]
    assert "== 2" in alerts["OrderExecutionCircuitBreakerOpen"]["expr"]
    assert "order_execution_exchange_errors_total" in alerts["OrderExecutionExchangeErrorRate"]["expr"]
    assert "order_execution_rate_limit_hits_total" in alerts["OrderExecutionRateLimitHits"]["expr"]
    assert (
        'order_execution_orders_by_state{state="UNKNOWN"}'
        in alerts["OrderExecutionOrdersStuckUnknown"]["expr"]
    )
    for rule in alerts.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        used = _metrics_in(rule["expr"])
        assert used and used <= KNOWN_METRICS, (rule["alert"], used)


def test_promtool_accepts_the_rules_and_the_dashboards_queries(tmp_path: Path) -> None:
    promtool = _tool("promtool", "prometheus")
    done = subprocess.run(
        [promtool, "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Every Grafana query, as a recording rule, so promtool parses its PromQL.
    records = [
        {"record": f"grafana:panel_{n}", "expr": expr.replace("$__rate_interval", "5m")}
        for n, expr in enumerate(e for exprs in _grafana_exprs().values() for e in exprs)
    ]
    rules = tmp_path / "grafana-queries.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "grafana", "rules": records}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- README -------------------------------------------------------------------------------


def test_readme_deployment_sections_name_files_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    for heading in ("## Docker", "## Kubernetes", "## Dashboard"):
        assert heading in readme, heading
    paths = set(
        re.findall(r"\b(deploy/[\w./-]*[\w/]|docker-compose\.yml|requirements-dashboard\.txt)", readme)
    )
    assert "deploy/Dockerfile" in paths and "deploy/kubernetes/" in paths
    for path in paths:
        assert (ROOT / path).exists(), path
    assert "docker build -f deploy/Dockerfile -t order-execution:latest ." in readme
    assert "kubectl apply -k deploy/kubernetes/" in readme
