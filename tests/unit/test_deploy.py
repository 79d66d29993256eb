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
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from detector.settings import GROUPS, Settings

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
