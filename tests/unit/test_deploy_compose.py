"""The Docker Compose file: images, dependencies, mounts, settings, Prometheus, Grafana."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_deploy import COMPOSE_FILE, DEPLOY, _settings_variables


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    import jsonschema

    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(compose), key=lambda e: e.json_path)
    assert not errors, "\n".join(f"{e.json_path}: {e.message}" for e in errors)


def test_compose_services_have_an_image_and_pinned_versions(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kafka", "topics", "detector", "api", "postgres", "simulator"} <= set(services)
    assert {"prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        image = service.get("image", "")
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag"
        if "build" in service:
            context = (COMPOSE_FILE.parent / service["build"]["context"]).resolve()
            assert (context / service["build"].get("dockerfile", "Dockerfile")).is_file()
    assert services["kafka"]["image"] == "apache/kafka:3.9.1"
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    commands = {name: services[name]["command"] for name in ("topics", "detector", "api")}
    assert commands == {"topics": ["topics", "create"], "detector": ["detect"], "api": ["api"]}
    assert services["simulator"]["command"][0] == "simulate"


def test_compose_dependencies_exist_and_wait_for_readiness(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for target, rule in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", target
    conditions = {
        name: {t: r["condition"] for t, r in s.get("depends_on", {}).items()}
        for name, s in services.items()
    }
    assert conditions["topics"]["kafka"] == "service_healthy"
    for name in ("detector", "api", "simulator"):
        assert conditions[name]["topics"] == "service_completed_successfully"
    assert conditions["api"]["postgres"] == "service_healthy"


def test_compose_mounts_exist_and_volumes_are_declared(compose: dict[str, Any]) -> None:
    services = compose["services"]
    declared = set(compose.get("volumes", {}))
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (COMPOSE_FILE.parent / source).exists(), f"{name}: {source} missing"
            else:
                assert source in declared, f"{name}: volume {source} not declared"
        for secret in service.get("secrets", []):
            assert secret in compose["secrets"], f"{name}: secret {secret} not declared"
    # Secret files are made by the user (keys are never committed); an example shows how.
    for secret in compose.get("secrets", {}).values():
        path = COMPOSE_FILE.parent / secret["file"]
        assert path.parent.is_dir()
        assert path.with_name(path.stem + ".example" + path.suffix).is_file()
    recovery = [v for v in services["detector"]["volumes"] if not v.startswith(".")]
    assert recovery and recovery[0].split(":")[1] == "/var/lib/fraudstream/recovery"


def test_compose_settings_are_real_and_reach_the_services(compose: dict[str, Any]) -> None:
    assert not _settings_variables(COMPOSE_FILE.read_text())
    services = compose["services"]
    env = {name: services[name]["environment"] for name in ("topics", "detector", "api")}
    kafka = services["kafka"]["environment"]
    advertised = dict(
        reversed(listener.split("://", 1))
        for listener in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    for name, variables in env.items():
        assert variables["FRAUDSTREAM_BOOTSTRAP_SERVERS"] in advertised, name
        # The image listens on 0.0.0.0; nothing here narrows it.
        assert variables.get("FRAUDSTREAM_API_HOST", "0.0.0.0") == "0.0.0.0"
        assert variables.get("FRAUDSTREAM_METRICS_HOST", "0.0.0.0") == "0.0.0.0"
    assert env["api"]["FRAUDSTREAM_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["api"]["FRAUDSTREAM_API_KEYS_FILE"] == "/run/secrets/api_keys"
    assert "broker" in kafka["KAFKA_PROCESS_ROLES"] and "controller" in kafka["KAFKA_PROCESS_ROLES"]


def test_compose_prometheus_scrapes_the_services_with_the_shared_job_names(
    compose: dict[str, Any],
) -> None:
    service = compose["services"]["prometheus"]
    config_flag = next(c for c in service["command"] if c.startswith("--config.file="))
    in_container = config_flag.split("=", 1)[1]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
    assert mounts[in_container] == "./compose/prometheus.yml"
    assert mounts["/etc/prometheus/rules"] == "./prometheus/rules"
    config = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    targets = {
        job["job_name"]: [t for s in job["static_configs"] for t in s["targets"]]
        for job in config["scrape_configs"]
    }
    env = compose["services"]["detector"]["environment"]
    api_env = compose["services"]["api"]["environment"]
    assert targets["fraudstream-detector"] == [f"detector:{env['FRAUDSTREAM_METRICS_PORT']}"]
    assert targets["fraudstream-api"] == [f"api:{api_env['FRAUDSTREAM_API_PORT']}"]
    shared = DEPLOY / "prometheus" / "prometheus.yml"
    if shared.exists():
        jobs = {job["job_name"] for job in yaml.safe_load(shared.read_text())["scrape_configs"]}
        assert set(targets) == jobs, "the same job names as deploy/prometheus/prometheus.yml"


def test_compose_grafana_mounts_match_its_provisioning(compose: dict[str, Any]) -> None:
    service = compose["services"]["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in service["volumes"]}
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    provisioning = DEPLOY / "grafana" / "provisioning"
    for provider in yaml.safe_load((provisioning / "dashboards" / "fraudstream.yml").read_text())[
        "providers"
    ]:
        assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    for source in yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]:
        for variable in re.findall(r"\$\{(\w+)\}", source["url"]):
            assert variable in service["environment"], f"Grafana needs {variable}"
    url = service["environment"]["PROMETHEUS_URL"]
    assert url == "http://prometheus:9090"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_compose_prometheus_config_and_rules_pass_promtool(tmp_path: Path) -> None:
    text = (DEPLOY / "compose" / "prometheus.yml").read_text()
    rules = DEPLOY / "prometheus" / "rules"
    local = tmp_path / "prometheus.yml"
    local.write_text(text.replace("/etc/prometheus/rules", str(rules)))
    result = subprocess.run(
        ["promtool", "check", "config", str(local)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
