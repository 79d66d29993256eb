"""The Kubernetes manifests, and the detector's start-up script with its per-pod recovery."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from detector.local.broker_config import find_free_ports
from detector.settings import DetectorSettings, Settings
from tests.unit.test_deploy import (
    DEPLOY,
    K8S,
    KUBERNETES_VERSION,
    NAMESPACE,
    _container,
    _env,
    _k8s_documents,
    _k8s_objects,
    _one,
    _pod_spec,
    _selects,
    _settings_variables,
    _workloads,
)


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
