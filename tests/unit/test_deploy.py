"""The container image, Docker Compose and Kubernetes files, checked without an engine.

- Dockerfile: parsed with ``dockerfile-parse``; stages, user, entry point, what it copies.
- deploy/docker-compose.yml: validated against the Compose Specification's JSON schema
  (the copy that ``check-jsonschema`` ships), then services, dependencies and mounts.
- deploy/k8s: every manifest validated against the Kubernetes JSON schemas that
  ``kubernetes-validate`` ships (strict: unknown fields fail), then selectors, ports,
  probes and security; the detector's start-up script is run for each pod, and the
  per-pod recovery partitions it makes are run through a real three-process Bytewax
  cluster that resumes from them.
- Every ``FRAUDSTREAM_*`` variable these files set is a ``Settings`` field.
- requirements.txt and requirements-dev.txt, the lock files: every dependency of
  pyproject.toml (runtime and dev group) pinned to a version it allows, with hashes, and
  what ``make install`` and the image install.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from detector.local.broker_config import find_free_ports
from detector.settings import GROUPS, DetectorSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"
NAMESPACE = "fraudstream"
KUBERNETES_VERSION = "1.30"
SETTING_VARIABLE = re.compile(r"\bFRAUDSTREAM_[A-Z0-9_]+")
SETTINGS_FIELDS = {name for group in GROUPS.values() for name in group.model_fields}
APP_IMAGE = "fraudstream"
RUNTIME_LOCK = ROOT / "requirements.txt"
DEV_LOCK = ROOT / "requirements-dev.txt"


# --- helpers --------------------------------------------------------------------------


def _settings_variables(text: str) -> set[str]:
    """``FRAUDSTREAM_*`` names in ``text`` that are not ``Settings`` fields."""
    names = set(SETTING_VARIABLE.findall(text))
    return {n for n in names if n.removeprefix("FRAUDSTREAM_").lower() not in SETTINGS_FIELDS}


def _dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regular expression (``**/``: any folders)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _dockerignored(relative: str, patterns: list[str]) -> bool:
    """Whether the build context leaves out ``relative``: the last pattern matching the
    path or a folder above it decides (``!`` re-includes), as Docker does."""
    parts = Path(relative).parts
    prefixes = ["/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _dockerignore_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def _k8s_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def _k8s_objects(kind: str | None = None) -> list[dict[str, Any]]:
    return [
        doc
        for path, doc in _k8s_documents()
        if path.name != "kustomization.yaml" and (kind is None or doc["kind"] == kind)
    ]


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in _k8s_objects(kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _workloads() -> list[dict[str, Any]]:
    return [o for o in _k8s_objects() if o["kind"] in {"Deployment", "StatefulSet", "Job"}]


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = _pod_spec(workload)["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


# --- Dockerfile -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> Any:
    from dockerfile_parse import DockerfileParser

    return DockerfileParser(str(ROOT / "Dockerfile"))


def _stages(parser: Any) -> list[list[dict[str, Any]]]:
    """Instructions per stage (comments left out)."""
    stages: list[list[dict[str, Any]]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if instruction["instruction"] != "COMMENT":
            assert stages, "the Dockerfile must start with FROM"
            stages[-1].append(instruction)
    return stages


def _values(stage: list[dict[str, Any]], name: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == name]


def test_dockerfile_builds_in_one_stage_and_runs_on_slim_python(dockerfile: Any) -> None:
    stages = _stages(dockerfile)
    assert len(stages) >= 2, "multi-stage: a builder and a runtime stage"
    froms = [_values(s, "FROM")[0].split() for s in stages]
    assert froms[0][0] == "python:3.12-slim" and froms[0][-1] == "builder"
    assert froms[-1][0] == "python:3.12-slim", "the runtime is python:3.12-slim"
    # The runtime takes the virtual environment from the builder, and nothing is built in it.
    runtime = stages[-1]
    assert any(v.startswith("--from=builder ") for v in _values(runtime, "COPY"))
    runtime_runs = " ".join(_values(runtime, "RUN"))
    for tool in ("pip install", "apt-get install", "gcc", "build-essential", "python3-dev"):
        assert tool not in runtime_runs, f"{tool!r} in the runtime stage"


def test_dockerfile_runs_fraudstream_as_a_non_root_user(dockerfile: Any) -> None:
    runtime = _stages(dockerfile)[-1]
    users = _values(runtime, "USER")
    assert users, "the runtime stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root uid (runAsNonRoot can check it)"
    assert json.loads(_values(runtime, "ENTRYPOINT")[-1]) == ["fraudstream"]
    # The same uid runs the Kubernetes pods.
    for workload in _workloads():
        assert _pod_spec(workload)["securityContext"]["runAsUser"] == int(uid)


def test_dockerfile_listens_on_every_interface_and_exposes_the_default_ports(
    dockerfile: Any,
) -> None:
    env = dockerfile.envs
    assert env["FRAUDSTREAM_API_HOST"] == "0.0.0.0"
    assert env["FRAUDSTREAM_METRICS_HOST"] == "0.0.0.0"
    assert not _settings_variables(dockerfile.content)
    exposed = {int(p) for v in _values(_stages(dockerfile)[-1], "EXPOSE") for p in v.split()}
    defaults = Settings()
    assert {defaults.api.api_port, defaults.detector.metrics_port} <= exposed


def test_dockerfile_copies_what_exists_and_the_build_context_keeps(dockerfile: Any) -> None:
    patterns = _dockerignore_patterns()
    for stage in _stages(dockerfile):
        for value in _values(stage, "COPY"):
            if value.startswith("--from="):
                continue
            *sources, _destination = value.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such file"
                assert not _dockerignored(source, patterns), f"COPY {source}: .dockerignore'd"


def test_dockerignore_keeps_the_package_and_leaves_out_the_rest() -> None:
    patterns = _dockerignore_patterns()
    kept = ["pyproject.toml", "README.md", "requirements.txt", "detector/cli.py"]
    kept += ["api/web/index.html"]
    kept += ["api/migrations/env.py", "models/__init__.py"]
    for path in kept:
        assert (ROOT / path).exists()
        assert not _dockerignored(path, patterns), path
    left_out = [".git/HEAD", ".venv/bin/python", "deploy/kafka/pom.xml", "tests/conftest.py"]
    left_out += ["detector/__pycache__/cli.cpython-312.pyc", ".fraudstream/recovery", "notebooks"]
    for path in left_out:
        assert _dockerignored(path, patterns), path


def test_the_wheel_carries_the_web_page_and_the_migrations() -> None:
    """Hatch puts every file of a listed package in the wheel (minus .gitignore'd ones)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wheel = config["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert "api" in wheel["packages"]
    assert not {"exclude", "only-include", "artifacts"} & set(wheel), "review the wheel config"
    data = [*(ROOT / "api" / "web").iterdir(), ROOT / "api" / "migrations" / "script.py.mako"]
    assert any(p.name == "index.html" for p in data)
    gitignore = (ROOT / ".gitignore").read_text().split()
    for path in data:
        relative = path.relative_to(ROOT).as_posix()
        assert not any(fnmatch.fnmatch(relative, g.strip("/")) for g in gitignore), relative


def test_dockerfile_installs_the_locked_runtime_versions(dockerfile: Any) -> None:
    builder = _stages(dockerfile)[0]
    runs = _values(builder, "RUN")
    copies = [value.split() for value in _values(builder, "COPY")]
    assert ["requirements.txt", "./"] in copies
    locked = [r for r in runs if "-r requirements.txt" in r]
    assert len(locked) == 1 and "--require-hashes" in locked[0], runs
    # Nothing else reaches the index: the project itself goes in without dependencies, and
    # the lock is copied before the sources (its layer outlives a change of code).
    for run in runs:
        for command in run.split("&&"):
            if "pip install" in command and "-r requirements.txt" not in command:
                assert "--no-deps" in command or "--upgrade" in command, command
    assert copies.index(["requirements.txt", "./"]) < copies.index(["detector", "./detector"])


# --- lock files -----------------------------------------------------------------------


class Pin(NamedTuple):
    version: str
    marker: str
    hashes: list[str]


def _lock(path: Path) -> dict[str, Pin]:
    """The pins of a lock file written by ``uv pip compile --generate-hashes``."""
    pins: dict[str, Pin] = {}
    for line in path.read_text().replace("\\\n", " ").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith("-"):  # an option line (-c, --index-url, ...)
            continue
        requirement_text, *hashes = line.split("--hash=")
        requirement = Requirement(requirement_text)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{path.name}: {line.split()[0]} is not pinned"
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"{path.name}: {name} pinned twice"
        marker = str(requirement.marker or "")
        pins[name] = Pin(specifier.version, marker, [h.strip() for h in hashes])
    return pins


def _lock_command(path: Path) -> str:
    """The command that wrote ``path``, from its header."""
    header = path.read_text().splitlines()[:2]
    assert header[0].startswith("# This file was autogenerated by uv"), path.name
    return header[1].removeprefix("#").strip()


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.mark.parametrize(
    ("lock", "groups"), [(RUNTIME_LOCK, ()), (DEV_LOCK, ("dev",))], ids=["runtime", "dev"]
)
def test_lock_pins_every_dependency_of_pyproject_to_a_version_it_allows(
    lock: Path, groups: tuple[str, ...]
) -> None:
    """Add or change a dependency in pyproject.toml without relocking, and this fails."""
    config = _pyproject()
    direct = list(config["project"]["dependencies"])
    for group in groups:
        direct += config["dependency-groups"][group]
    pins = _lock(lock)
    unlocked, outside = [], []
    for text in direct:
        requirement = Requirement(text)
        pin = pins.get(canonicalize_name(requirement.name))
        if pin is None:
            unlocked.append(text)
        elif not requirement.specifier.contains(pin.version, prereleases=True):
            outside.append(f"{text} (locked: {pin.version})")
    relock = "relock (README, Development, Locked versions)"
    assert not unlocked, f"{lock.name} lacks {unlocked}: {relock}"
    assert not outside, f"{lock.name} pins versions pyproject.toml excludes: {outside}: {relock}"


def test_lock_files_hash_every_pin_and_agree() -> None:
    runtime, dev = _lock(RUNTIME_LOCK), _lock(DEV_LOCK)
    for path, pins in ((RUNTIME_LOCK, runtime), (DEV_LOCK, dev)):
        unhashed = [name for name, pin in pins.items() if not pin.hashes]
        assert not unhashed, f"{path.name}: no hashes for {unhashed}"
        assert all(h.startswith("sha256:") for pin in pins.values() for h in pin.hashes)
    # The image runs the versions the suite runs with, and none of the tools.
    assert set(runtime) <= set(dev), set(runtime) - set(dev)
    versions = {name: (pin.version, dev[name].version) for name, pin in runtime.items()}
    assert all(locked == dev_locked for locked, dev_locked in versions.values()), versions
    assert not {"pytest", "ruff", "mypy", "uv", "hypothesis"} & set(runtime)
    assert "uv" in dev, "the dev group brings the tool that regenerates the lock files"


def test_lock_files_cover_every_supported_python_and_say_how_they_were_made() -> None:
    """One universal resolution from the oldest supported Python (a lock made for the
    running interpreter alone would leave out what another version needs)."""
    requires_python = _pyproject()["project"]["requires-python"]
    oldest = re.fullmatch(r">=(3\.\d+),<3\.\d+", requires_python)
    assert oldest, requires_python
    readme = (ROOT / "README.md").read_text()
    for path, group in ((DEV_LOCK, ["--group", "dev"]), (RUNTIME_LOCK, [])):
        command = _lock_command(path)
        words = command.split()
        assert words[:4] == ["uv", "pip", "compile", "pyproject.toml"], command
        assert {"--universal", "--generate-hashes"} <= set(words), command
        assert words[words.index("--python-version") + 1] == oldest.group(1), command
        assert words[words.index("-o") + 1] == path.name, command
        assert (words[4:6] == group) == bool(group), command
        assert command in readme, f"the README's command for {path.name} is not {command!r}"
    # The runtime lock follows the dev lock's versions.
    runtime_words = _lock_command(RUNTIME_LOCK).split()
    assert runtime_words[runtime_words.index("-c") + 1] == DEV_LOCK.name


def test_make_install_takes_the_dev_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    rule = re.search(r"^\$\(INSTALLED\):(.*)\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert rule, "the install rule"
    prerequisites, recipe = rule.group(1).split(), rule.group(2)
    assert {"pyproject.toml", DEV_LOCK.name} <= set(prerequisites)
    installs = [line.strip() for line in recipe.splitlines() if "pip install" in line]
    locked = "--require-hashes -r requirements-dev.txt"
    assert any(locked in line for line in installs), f"no `pip install {locked}`: {installs}"
    assert any(line.endswith("--no-deps -e .") for line in installs), installs
    # Nothing resolved afresh: the lock, pip itself and the project without dependencies.
    for line in installs:
        assert "requirements-dev.txt" in line or "--no-deps" in line or '"pip' in line, line


# --- Docker Compose -------------------------------------------------------------------


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


# --- Kubernetes -----------------------------------------------------------------------


def test_every_manifest_has_a_kind_a_name_and_the_namespace() -> None:
    documents = list(_k8s_documents())
    assert documents
    for path, doc in documents:
        assert {"apiVersion", "kind"} <= set(doc), path
        if doc["kind"] == "Kustomization":
            continue
        metadata = doc["metadata"]
        assert metadata.get("name"), path
        if doc["kind"] != "Namespace":
            assert metadata.get("namespace") == NAMESPACE, f"{path}: {metadata['name']}"
        assert metadata.get("labels", {}).get("app.kubernetes.io/part-of") == "fraudstream"


def test_every_manifest_follows_the_kubernetes_schema() -> None:
    import kubernetes_validate

    checked = 0
    for path, doc in _k8s_documents():
        if doc["kind"] in {"Kustomization", "ServiceMonitor"}:
            continue  # not in the Kubernetes API: checked below
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(p) for p in error.path)
            pytest.fail(f"{path.name}: {doc['kind']} {doc['metadata']['name']}: {where}: {error}")
        checked += 1
    assert checked >= 8


def test_kustomization_lists_every_manifest_but_the_operator_ones() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == NAMESPACE
    listed = set(kustomization["resources"])
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == files - {"servicemonitors.yaml"}
    images = {i["name"] for i in kustomization["images"]}
    for workload in _workloads():
        assert _container(workload)["image"].split(":")[0] in images


def test_workload_selectors_services_and_ports_agree() -> None:
    workloads = _workloads()
    for workload in workloads:
        labels = workload["spec"]["template"]["metadata"]["labels"]
        if workload["kind"] != "Job":
            assert _selects(workload["spec"]["selector"]["matchLabels"], labels)
        container = _container(workload)
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        if "prometheus.io/port" in annotations:
            ports = {p["containerPort"] for p in container["ports"]}
            assert int(annotations["prometheus.io/port"]) in ports
            assert annotations["prometheus.io/path"] == "/metrics"
    for service in _k8s_objects("Service"):
        selected = [
            w
            for w in workloads
            if _selects(service["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(selected) == 1, service["metadata"]["name"]
        names = {p["name"] for p in _container(selected[0])["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names, f"{service['metadata']['name']}: {port}"
    for budget in _k8s_objects("PodDisruptionBudget"):
        selector = budget["spec"]["selector"]["matchLabels"]
        assert any(
            _selects(selector, w["spec"]["template"]["metadata"]["labels"]) for w in workloads
        )


def test_config_and_secrets_referenced_exist_and_hold_real_settings() -> None:
    config_maps = {o["metadata"]["name"]: o for o in _k8s_objects("ConfigMap")}
    secrets = {o["metadata"]["name"]: o for o in _k8s_objects("Secret")}
    for workload in _workloads():
        for source in _container(workload).get("envFrom", []):
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in config_maps
            else:
                assert source["secretRef"]["name"] in secrets
    for path in K8S.glob("*.yaml"):
        assert not _settings_variables(path.read_text()), path.name
    keys = {k for o in [*config_maps.values(), *secrets.values()] for k in o.get("data", {})}
    keys |= {k for o in secrets.values() for k in o.get("stringData", {})}
    assert all(k.startswith("FRAUDSTREAM_") for k in keys)
    api_secret = secrets["fraudstream-api"]["stringData"]
    assert {"FRAUDSTREAM_API_KEYS", "FRAUDSTREAM_DATABASE_URL"} <= set(api_secret)
    # Secrets stay out of the ConfigMap.
    assert not {"FRAUDSTREAM_API_KEYS", "FRAUDSTREAM_DATABASE_URL"} & set(
        config_maps["fraudstream-config"]["data"]
    )


def test_the_placeholder_api_keys_are_refused() -> None:
    from api.auth import KeyConfigError, parse_text

    keys = _one("Secret", "fraudstream-api")["stringData"]["FRAUDSTREAM_API_KEYS"]
    with pytest.raises(KeyConfigError):
        parse_text(keys, lines=False, source="FRAUDSTREAM_API_KEYS")


def test_pods_run_as_non_root_without_privileges_and_with_limits() -> None:
    for workload in _workloads():
        name = workload["metadata"]["name"]
        pod = _pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod.get("automountServiceAccountToken") is False, name
        container = _container(workload)
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"]["drop"] == ["ALL"], name
        assert security["readOnlyRootFilesystem"] is True, name
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        if workload["kind"] != "Job":
            assert "/tmp" in mounts, f"{name}: a writable /tmp"
        resources_ = container["resources"]
        assert resources_["requests"]["memory"] and resources_["limits"]["memory"], name


def test_the_api_is_probed_on_health_and_listens_everywhere() -> None:
    deployment = _one("Deployment", "fraudstream-api")
    assert deployment["spec"]["replicas"] == 1, "one outbox sender per database"
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    container = _container(deployment)
    assert container["args"] == ["api"]
    env = _env(container)
    assert env["FRAUDSTREAM_API_HOST"] == "0.0.0.0"
    port = next(p for p in container["ports"] if p["name"] == "http")
    assert port["containerPort"] == int(env["FRAUDSTREAM_API_PORT"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe


def test_the_detector_is_a_stateful_cluster_behind_a_headless_service() -> None:
    statefulset = _one("StatefulSet", "fraudstream-detector")
    spec = statefulset["spec"]
    service = _one("Service", spec["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert spec["podManagementPolicy"] == "Parallel"
    container = _container(statefulset)
    env = _env(container)
    assert int(env["DETECTOR_PROCESSES"]) == spec["replicas"] >= 2
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["cluster"] == int(env["DETECTOR_CLUSTER_PORT"])
    assert ports["metrics"] == int(env["FRAUDSTREAM_METRICS_PORT"])
    assert env["FRAUDSTREAM_METRICS_HOST"] == "0.0.0.0"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, probe
    # The recovery folder is on the pod's own persistent volume, below its root.
    claims = {c["metadata"]["name"] for c in spec["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (claim,) = claims
    recovery = Path(env["FRAUDSTREAM_RECOVERY_DIR"])
    assert Path(mounts[claim]) in recovery.parents
    assert spec["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"


def test_service_monitors_select_the_services_under_the_shared_job_names() -> None:
    monitors = _k8s_objects("ServiceMonitor")
    assert {m["apiVersion"] for m in monitors} == {"monitoring.coreos.com/v1"}
    services = _k8s_objects("Service")
    jobs = set()
    for monitor in monitors:
        selector = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [s for s in services if _selects(selector, s["metadata"]["labels"])]
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
        port_names = {p["name"] for p in service["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names
            assert endpoint["path"] == "/metrics"
        jobs.add(service["metadata"]["name"])  # the operator's job label
    shared = DEPLOY / "prometheus" / "prometheus.yml"
    if shared.exists():
        expected = {job["job_name"] for job in yaml.safe_load(shared.read_text())["scrape_configs"]}
        assert jobs == expected


# --- the detector's start-up script and per-pod recovery ------------------------------


def _run_detector_script(pod: int, state: Path, tmp_path: Path) -> tuple[int, dict[str, str]]:
    """Run the StatefulSet's script as pod ``pod`` would; ``fraudstream`` is a stub that
    records its arguments and environment."""
    statefulset = _one("StatefulSet", "fraudstream-detector")
    container = _container(statefulset)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "fraudstream"
    stub.write_text('#!/bin/sh\necho "ARGS=$*" > "$STUB_OUT"\nenv >> "$STUB_OUT"\n')
    stub.chmod(0o755)
    out = tmp_path / f"pod-{pod}.env"
    out.unlink(missing_ok=True)
    env = {
        **_env(container),
        "POD_NAME": f"{statefulset['metadata']['name']}-{pod}",
        "FRAUDSTREAM_RECOVERY_DIR": str(state / "recovery"),
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "TMPDIR": str(tmp_path),
        "STUB_OUT": str(out),
    }
    result = subprocess.run(
        [*container["command"], *container["args"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        return result.returncode, {}
    lines = out.read_text().splitlines()
    recorded = dict(line.split("=", 1) for line in lines if "=" in line)
    return result.returncode, recorded


PROBE_FLOW = textwrap.dedent(
    """
    import sys
    from datetime import timedelta

    import bytewax.operators as op
    from bytewax.connectors.stdio import StdOutSink
    from bytewax.dataflow import Dataflow
    from bytewax.recovery import RecoveryConfig
    from bytewax.testing import TestingSource, cluster_main

    EOF = TestingSource.EOF()
    items = [("a", 4), ("b", 4), ("c", 1), ("d", 2), EOF, ("a", 1), ("b", 5), ("c", 9)]

    def keep_max(state, value):
        state = max(state or 0, value)
        return state, state

    flow = Dataflow("probe")
    stream = op.input("inp", flow, TestingSource(items))
    stream = op.stateful_map("max", stream, keep_max)
    op.output("out", op.map("show", stream, lambda kv: f"{kv[0]}={kv[1]}"), StdOutSink())
    process, addresses, recovery = int(sys.argv[1]), sys.argv[2].split(";"), sys.argv[3]
    cluster_main(
        flow, addresses, process,
        epoch_interval=timedelta(0), recovery_config=RecoveryConfig(recovery),
    )
    """
)


def _run_cluster(script: Path, recovery_dirs: list[Path]) -> list[str]:
    """One execution of a Bytewax cluster, process i on recovery_dirs[i]; its output."""
    addresses = ";".join(f"127.0.0.1:{p}" for p in find_free_ports(len(recovery_dirs)))
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), str(i), addresses, str(d)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, d in enumerate(recovery_dirs)
    ]
    lines: list[str] = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        # Bytewax also prints its connection attempts: keep the flow's own lines.
        lines += [line for line in stdout.splitlines() if re.fullmatch(r"[a-z]=\d+", line)]
    return sorted(lines)


def test_detector_pods_take_their_process_id_addresses_and_recovery_partition(
    tmp_path: Path,
) -> None:
    from detector.flow.recovery import recovery_config
    from detector.metrics.endpoint import metrics_port

    statefulset = _one("StatefulSet", "fraudstream-detector")
    processes = statefulset["spec"]["replicas"]
    env = _env(_container(statefulset))
    name = statefulset["metadata"]["name"]
    service = statefulset["spec"]["serviceName"]
    expected_addresses = ";".join(
        f"{name}-{i}.{service}:{env['DETECTOR_CLUSTER_PORT']}" for i in range(processes)
    )
    states = [tmp_path / f"state-{i}" for i in range(processes)]
    for pod, state in enumerate(states):
        state.mkdir()
        (state / "lost+found").mkdir()  # what a fresh ext4 volume holds
        code, recorded = _run_detector_script(pod, state, tmp_path)
        assert code == 0
        assert recorded["ARGS"] == "detect"
        assert recorded["FRAUDSTREAM_PROCESS_ID"] == str(pod)
        assert recorded["FRAUDSTREAM_ADDRESSES"] == expected_addresses
        # Settings accept what the script exports, and every pod serves /metrics on one port.
        settings = Settings(
            detector=DetectorSettings(
                process_id=recorded["FRAUDSTREAM_PROCESS_ID"],
                addresses=recorded["FRAUDSTREAM_ADDRESSES"],
                metrics_port=recorded["FRAUDSTREAM_METRICS_PORT"],
                recovery_dir=recorded["FRAUDSTREAM_RECOVERY_DIR"],
            )
        )
        assert metrics_port(
            settings.detector.metrics_port, settings.detector.process_id, settings.detector.cluster
        ) == int(env["FRAUDSTREAM_METRICS_PORT"])
        # What `fraudstream detect` does first: its own partition on its own volume.
        recovery_config(settings)
        assert [p.name for p in (state / "recovery").iterdir()] == [f"part-{pod}.sqlite3"]
        # A restart keeps the partition as it is.
        before = (state / "recovery" / f"part-{pod}.sqlite3").stat().st_mtime_ns
        recovery_config(settings)
        assert (state / "recovery" / f"part-{pod}.sqlite3").stat().st_mtime_ns == before
    # A pod beyond DETECTOR_PROCESSES refuses to start.
    extra = tmp_path / "state-extra"
    extra.mkdir()
    assert _run_detector_script(processes, extra, tmp_path)[0] != 0

    # The per-pod partitions make a valid recovery store for a cluster of that many
    # processes: a second execution resumes from the first one's state.
    script = tmp_path / "probe_flow.py"
    script.write_text(PROBE_FLOW)
    recovery_dirs = [state / "recovery" for state in states]
    assert _run_cluster(script, recovery_dirs) == ["a=4", "b=4", "c=1", "d=2"]
    assert _run_cluster(script, recovery_dirs) == ["a=4", "b=5", "c=9"]


@pytest.mark.skipif(os.name != "posix", reason="runs /bin/sh")
def test_detector_script_is_posix_shell() -> None:
    container = _container(_one("StatefulSet", "fraudstream-detector"))
    assert container["command"][0] == "/bin/sh"
    result = subprocess.run(
        ["/bin/sh", "-n", "-c", container["args"][0]], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
