"""The deployment files say what the service is: docker-compose.yml (checked by Debian's
`docker-compose config`), deploy/Dockerfile (read as Docker reads it, and by hadolint; built for
real by tests/integration/test_docker_build.py), the Grafana dashboard and the Prometheus alert
rules (checked by `promtool` where installed), and the README's sections about them.
deploy/kubernetes/ is tests/unit/test_deploy_kubernetes.py's.

A missing `docker-compose` or `promtool` skips its check locally and fails it in CI (CI=true):
`apt-get install -y docker-compose prometheus`.
"""

from __future__ import annotations

import fnmatch
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

from tests.dockerfile import BuildContext, Dockerfile, parse_dockerfile
from tests.factories import SEED_METRICS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _served_metrics() -> dict[str, frozenset[str]]:
    """Every metric the processes serve, by its exposed name (a counter's with `_total`), with its
    label names: the shared ones (orders/metrics.py, exchange's included) and the gateway's."""
    from prometheus_client.metrics import MetricWrapperBase

    from order_execution.gateway import metrics as gateway_metrics
    from order_execution.orders import metrics as shared_metrics

    served: dict[str, frozenset[str]] = {}
    for module in (shared_metrics, gateway_metrics):
        for metric in vars(module).values():
            if isinstance(metric, MetricWrapperBase):
                name = metric._name + ("_total" if metric._type == "counter" else "")
                served[name] = frozenset(metric._labelnames)
    return served


SERVED_METRICS = _served_metrics()
KNOWN_METRICS = frozenset(SERVED_METRICS)
_METRIC = re.compile(r"\border_execution_[a-z_]+")
_SELECTOR = re.compile(r"\b(order_execution_[a-z_]+)\{([^}]*)\}")
_MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_HISTOGRAM_SERIES = ("_bucket", "_count", "_sum")
ROLES = {"gateway", "worker", "listener", "dashboard"}
EXCHANGE_ROLES = {"gateway", "worker", "listener"}  # the roles that talk to the exchange


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


def _labels_missing(expr: str) -> set[str]:
    """The labels `expr` selects on that its metric does not have, and those it groups by that
    none of its metrics has (`le` belongs to a histogram's buckets)."""
    missing: set[str] = set()
    used = _metrics_in(expr)
    for series, matchers in _SELECTOR.findall(expr):
        (metric,) = _metrics_in(series)
        labels = SERVED_METRICS.get(metric, frozenset())
        missing |= {f"{metric}{{{label}}}" for label in _MATCHER.findall(matchers) if label not in labels}
    anywhere = set().union(*(SERVED_METRICS.get(metric, frozenset()) for metric in used)) | {"le"}
    for grouping in _GROUPING.findall(expr):
        missing |= {
            f"by ({label})"
            for label in (g.strip() for g in grouping.split(","))
            if label and label not in anywhere
        }
    return missing


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
        [sys.executable, "-m", "usdm_simulator", "--account", account],
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


def _default_services(config: dict[str, Any]) -> dict[str, Any]:
    """The services `docker-compose up` starts without a profile (`config` lists every one)."""
    return {name: service for name, service in config["services"].items() if not service.get("profiles")}


def test_compose_runs_the_production_shape() -> None:
    services = _default_services(_compose_config())
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
        assert env["REDIS_ADDRESS"] == "redis:6379" and env["NATS_ADDRESS"] == "nats://nats:4222"
        assert {"LOG_LEVEL", "LOG_FORMAT"} <= set(env)
        for depends in ("redis", "nats"):
            assert services[name]["depends_on"][depends]["condition"] == "service_healthy"


def test_compose_gives_the_exchange_keys_only_to_the_roles_that_talk_to_the_exchange() -> None:
    services = _default_services(_compose_config())
    for name in EXCHANGE_ROLES:
        env = services[name]["environment"]
        assert env["BINANCE_API_KEY"] == "test-key" and env["BINANCE_SECRET_KEY"] == "test-secret"
        assert {"BINANCE_TESTNET", "BINANCE_BASE_URL"} <= set(env)
    for name in set(services) - EXCHANGE_ROLES - {"simulator"}:  # the simulator gets them as --account
        leaked = {k for k in services[name].get("environment", {}) if k.startswith("BINANCE_")}
        assert not leaked, (name, leaked)


def test_compose_listens_on_the_containers_addresses_with_auth_on() -> None:
    services = _compose_config()["services"]
    for name in ROLES - {"dashboard"}:  # the gateway's ports and the worker and listener /metrics
        env = services[name]["environment"]
        assert env["ORDER_EXECUTION__SERVER__HOST"] == "0.0.0.0", name
        assert env["ORDER_EXECUTION__AUTH__ENABLED"] == "true", name
    assert services["dashboard"]["environment"]["ORDER_EXECUTION__DASHBOARD__HOST"] == "0.0.0.0"


def test_compose_holds_no_credentials_and_publishes_on_loopback_only() -> None:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = raw["x-exchange-env"]
    for key in ("BINANCE_API_KEY", "BINANCE_SECRET_KEY"):
        # From the environment or .env, with no default: nothing to leak, and config -q passes.
        assert env[key] == "${" + key + ":-}", env[key]
    for name, service in _compose_config()["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)


HA_SERVICES = {"redis-replica-1", "redis-replica-2", "sentinel-1", "sentinel-2", "sentinel-3"}
HA_SERVICES |= {"nats-1", "nats-2", "nats-3", "gateway-2"}


def _ha_config() -> dict[str, Any]:
    done = _compose("--env-file", str(ROOT / "deploy" / "compose-ha.env"), "--profile", "ha", "config")
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_docker_compose_accepts_the_ha_profile() -> None:
    for args in (
        ("--profile", "ha"),
        ("--env-file", str(ROOT / "deploy" / "compose-ha.env"), "--profile", "ha"),
    ):
        done = _compose(*args, "config", "-q")
        assert done.returncode == 0, done.stderr


def test_the_ha_profile_adds_two_replicas_three_sentinels_three_nats_nodes_and_a_gateway() -> None:
    services = _ha_config()["services"]
    assert {name for name, service in services.items() if service.get("profiles") == ["ha"]} == HA_SERVICES
    for name in ("redis-replica-1", "redis-replica-2"):
        command = services[name]["command"]
        assert command[command.index("--replicaof") + 1 : command.index("--replicaof") + 3] == [
            "redis",
            "6379",
        ]
        assert _flag(command, "--min-replicas-to-write") == "1"  # guarded once promoted
        assert _flag(command, "--replica-announce-ip") == name
    primary = services["redis"]["command"]
    assert (
        _flag(primary, "--min-replicas-to-write") == "1" and _flag(primary, "--min-replicas-max-lag") == "10"
    )
    for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
        script = services[name]["command"][-1]
        assert "'sentinel monitor order-execution redis 6379 2'" in script
        assert "down-after-milliseconds order-execution 2000" in script
        assert "failover-timeout order-execution 5000" in script
        assert services[name]["hostname"] == name
    for name in ("nats-1", "nats-2", "nats-3"):
        command = services[name]["command"]
        assert "-js" in command and _flag(command, "--name") == name
        others = {f"nats://{other}:6222" for other in ("nats-1", "nats-2", "nats-3") if other != name}
        assert set(_flag(command, "--routes").split(",")) == others
    assert all(port.startswith("127.0.0.1:") for port in services["gateway-2"]["ports"])
    assert services["gateway-2"]["environment"] == services["gateway"]["environment"]


def test_the_ha_settings_point_every_role_at_the_sentinels_and_the_nats_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from order_execution.runtime.settings import load_settings

    services = _ha_config()["services"]
    for name in (*ROLES, "gateway-2"):
        env = services[name]["environment"]
        for key, value in env.items():
            monkeypatch.setenv(key, str(value))
        config = tmp_path / "config.yaml"
        config.write_text("{}\n")
        settings = load_settings(config)
        assert settings.redis.sentinels == ["sentinel-1:26379", "sentinel-2:26379", "sentinel-3:26379"], name
        assert settings.redis.master_name == "order-execution" and settings.redis.min_replica_acks == 1
        assert settings.nats.servers == [f"nats://nats-{i}:4222" for i in (1, 2, 3)], name
        assert settings.nats.replicas == 3


def test_without_the_ha_settings_the_roles_use_one_redis_and_one_nats() -> None:
    services = _default_services(_compose_config())
    for name in ROLES:
        env = services[name]["environment"]
        assert (
            env["ORDER_EXECUTION__REDIS__SENTINELS"] == "[]" and env["ORDER_EXECUTION__NATS__SERVERS"] == "[]"
        )
        assert env["ORDER_EXECUTION__REDIS__MIN_REPLICA_ACKS"] == "0"
        assert env["ORDER_EXECUTION__NATS__REPLICAS"] == "1"
    assert _flag(services["redis"]["command"], "--min-replicas-to-write") == "0"


# --- deploy/Dockerfile (built for real by tests/integration/test_docker_build.py) ----------


def _dockerfile() -> Dockerfile:
    return parse_dockerfile((DEPLOY / "Dockerfile").read_text())


def test_the_image_is_multi_stage_slim_and_runs_as_a_user() -> None:
    dockerfile = _dockerfile()
    assert dockerfile.global_args["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"
    assert len(dockerfile.stages) >= 2
    assert {stage.base for stage in dockerfile.stages} == {"python:3.11-slim-bookworm"}
    final = dockerfile.stages[-1]
    user = final.of("USER")
    assert user and user[-1].arguments not in ("root", "0") and "10001" in user[-1].arguments
    assert [e.exec_form() for e in final.of("ENTRYPOINT")] == [["order-execution"]]
    copied = [c.flags_and_words() for c in final.of("COPY")]
    assert copied == [({"from": "build"}, ["/opt/venv", "/opt/venv"])]


def test_the_image_generates_the_code_of_every_proto_and_installs_the_dashboard_without_downgrades() -> None:
    runs = " ".join(r.arguments for r in _dockerfile().stage("build").of("RUN"))
    [protoc] = [command for command in runs.split("&&") if "grpc_tools.protoc" in command]
    assert "--grpc_python_out" in protoc and "--python_out" in protoc
    globs = [word for word in protoc.split() if word.endswith(".proto")]
    # admin.proto too: gateway.server imports it. Through the namespace, as `make setup` compiles them.
    for proto in sorted(ROOT.glob("order_execution/proto/*.proto")):
        assert any(fnmatch.fnmatchcase(proto.relative_to(ROOT).as_posix(), g) for g in globs), proto
    assert "pip install --no-deps -r requirements-dashboard.txt" in runs
    assert re.search(
        r"pip install( --quiet)? --no-deps -r requirements-dashboard.txt", (ROOT / "Makefile").read_text()
    )


def test_the_build_context_keeps_every_package_and_leaves_out_tests_and_generated_code() -> None:
    context = BuildContext.of(ROOT)
    # The service's packages and the simulator's (its own distribution in simulator/, installed too).
    for project in ("", "simulator/"):
        pyproject = tomllib.loads((ROOT / project / "pyproject.toml").read_text())
        packages = [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
        assert packages, project
        for package in packages:
            assert f"{project}{package}/__init__.py" in context.files, package
        for needed in ("pyproject.toml", "README.md"):
            assert project + needed in context.files, project + needed
    assert "requirements-dashboard.txt" in context.files
    assert "simulator/usdm_simulator/data/usdm_perpetuals.json" in context.files
    assert {p.relative_to(ROOT).as_posix() for p in ROOT.glob("proto/*.proto")} <= context.files
    for file in context.files:
        assert not file.startswith(("tests/", "simulator/tests/", ".git/", ".venv/", ".run/", "docs/")), file
        assert ".egg-info/" not in file, file
        assert "__pycache__" not in file and not re.match(r"proto/\w+_pb2", file), file


def _dev_tool(name: str) -> str:
    """A tool the dev dependencies install beside the interpreter (`make setup`)."""
    found = Path(sys.executable).parent / name
    return str(found) if found.exists() else (shutil.which(name) or pytest.fail(f"{name}: run make setup"))


def test_hadolint_accepts_the_dockerfile() -> None:
    done = subprocess.run(
        [_dev_tool("hadolint"), "--no-color", "--failure-threshold", "style", str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_would_report_a_dockerfile_that_breaks_its_rules(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /src && pip install .\n")
    done = subprocess.run(
        [_dev_tool("hadolint"), "--no-color", "--failure-threshold", "style", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0 and "DL3003" in done.stdout and "DL3007" in done.stdout, done.stdout


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
            assert not _labels_missing(expr), (title, _labels_missing(expr))


def test_the_label_check_catches_a_label_a_metric_does_not_have() -> None:
    assert _labels_missing('sum by (account) (order_execution_queue_depth{account=~"$account"})') == set()
    assert _labels_missing('order_execution_cache_hits_total{account="a"}') == {
        "order_execution_cache_hits_total{account}"
    }
    assert _labels_missing("sum by (venue) (order_execution_queue_depth)") == {"by (venue)"}


ACCOUNT_PANELS = {
    "Orders by state per account": "order_execution_orders_by_state",
    "Rate budget used per account (ORDERS)": "order_execution_rate_budget_used",
    "Queue depth per account": "order_execution_queue_depth",
    "Exchange errors per account": "order_execution_exchange_errors_total",
    "Rate-limit hits per account": "order_execution_rate_limit_hits_total",
}


def test_grafana_has_an_account_variable_and_panels_per_account() -> None:
    [variable] = [v for v in _grafana()["templating"]["list"] if v["name"] == "account"]
    assert variable["type"] == "query" and variable["multi"] is True and variable["includeAll"] is True
    assert variable["allValue"] == ".*"  # All also matches series without an account (client limits)
    query = variable["query"]["query"]
    assert query == variable["definition"] and query.startswith("label_values(")
    (metric,) = _metrics_in(query)
    assert "account" in SERVED_METRICS[metric]
    exprs = _grafana_exprs()
    for title, metric in ACCOUNT_PANELS.items():
        [expr] = exprs[title]
        assert metric in _metrics_in(expr), title
        assert 'account=~"$account"' in expr and re.search(r"by \(account\b", expr), (title, expr)
    [budget] = exprs["Rate budget used per account (ORDERS)"]
    assert _metrics_in(budget) == {"order_execution_rate_budget_used", "order_execution_rate_budget_limit"}
    assert 'window=~"orders_10s|orders_1m"' in budget
    # Every panel whose metrics all carry an account follows the variable.
    for title, panel_exprs in exprs.items():
        for expr in panel_exprs:
            if all("account" in SERVED_METRICS[m] for m in _metrics_in(expr)):
                assert 'account=~"$account"' in expr, (title, expr)


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
        assert not _labels_missing(rule["expr"]), (rule["alert"], _labels_missing(rule["expr"]))


def test_what_is_an_accounts_alerts_per_account() -> None:
    alerts = {rule["alert"]: rule for rule in _alerts()}
    for name in (
        "OrderExecutionRateLimitHits",
        "OrderExecutionRateBudgetExhausted",
        "OrderExecutionExchangeErrorRate",
        "OrderExecutionOrdersStuckUnknown",
        "OrderExecutionQueueBacklog",
    ):
        assert re.search(r"\bby \((account\b|[\w, ]*\baccount\b)", alerts[name]["expr"]), name
        assert "{{ $labels.account }}" in alerts[name]["annotations"]["summary"], name
    budget = alerts["OrderExecutionRateBudgetExhausted"]["expr"]
    assert 'limit=~"rate_budget|budget_exceeded"' in budget
    # A breaker is the venue's: its alert stays per breaker, as its gauge.
    assert "account" not in alerts["OrderExecutionCircuitBreakerOpen"]["expr"]


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
