"""Helpers for the tests of the operations files: Prometheus rules, Grafana dashboards,
promtool, and a real Prometheus process.

PromQL has no offline parser in Python, so the expressions are checked in two places:
promtool parses the rules (``check rules``) and a live Prometheus evaluates every rule
and every dashboard query (tests/integration/test_observability.py). The helpers here
find those expressions and split alert conditions into the parts worth querying.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from detector.local.broker_config import find_free_ports

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES_DIR = PROMETHEUS_DIR / "rules"
RULE_TESTS_DIR = PROMETHEUS_DIR / "tests"
GRAFANA_DIR = REPO / "deploy" / "grafana"
DASHBOARDS_DIR = GRAFANA_DIR / "dashboards"
DATASOURCE_UID = "fraudstream-prometheus"
DETECTOR_JOB = "fraudstream-detector"
API_JOB = "fraudstream-api"

# Grafana's variables, replaced by what Grafana would send for a recent time range.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "$model": ".*",
    "${model}": ".*",
}


def require_tool(name: str) -> str:
    """The path of ``name`` (promtool, prometheus); skip without it, or fail on CI."""
    found = shutil.which(name) or (
        f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None
    )
    if found:
        return found
    message = (
        f"{name} not found on PATH: install Prometheus (Debian: `apt-get install prometheus`, "
        f"or `make system`)"
    )
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool; the result is returned whatever its exit code."""
    return subprocess.run(
        [require_tool("promtool"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- Rules ----------------------------------------------------------------------------


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def load_rules() -> list[dict[str, Any]]:
    """Every rule of every group of every rules file, with its group's name."""
    rules = []
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                rules.append({**rule, "group": group["name"]})
    return rules


def alert_rules() -> list[dict[str, Any]]:
    return [r for r in load_rules() if "alert" in r]


def recording_rules() -> list[dict[str, Any]]:
    return [r for r in load_rules() if "record" in r]


# --- Dashboards -----------------------------------------------------------------------


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def load_dashboard(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside (collapsed) rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


@dataclass(frozen=True)
class DashboardQuery:
    where: str  # "overview.json: Throughput by decision [A]"
    expr: str  # as written in the dashboard

    @property
    def promql(self) -> str:
        return substitute(self.expr)


def dashboard_queries(path: Path) -> list[DashboardQuery]:
    """Every target expression of every panel, and every variable's query."""
    dashboard = load_dashboard(path)
    found = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            where = f"{path.name}: {panel.get('title')} [{target.get('refId')}]"
            found.append(DashboardQuery(where, target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            found.append(DashboardQuery(f"{path.name}: variable ${variable['name']}", text))
    return found


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)\s*$")


def substitute(expr: str) -> str:
    """The PromQL Grafana would send: variables replaced, ``label_values(m, l)`` -> ``m``."""
    match = _LABEL_VALUES.match(expr)
    if match:
        return match.group(1)
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    return expr


# --- Splitting an alert condition -----------------------------------------------------

_SET_OPERATORS = ("and", "or", "unless")
_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
_MODIFIERS = re.compile(
    r"^\s*(?:bool\s+)?(?:(?:on|ignoring)\s*\([^)]*\)\s*)?"
    r"(?:(?:group_left|group_right)\s*(?:\([^)]*\))?\s*)?"
)
_SCALAR = re.compile(r"[\d\s.eE+\-*/()]+")


def _top_level_split(expr: str) -> list[str]:
    """``expr`` split at its outermost binary set and comparison operators."""
    parts, depth, start, i = [], 0, 0, 0
    quote: str | None = None
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            word = re.match(r"[a-z_]+", expr[i:])
            boundary = i == 0 or not (expr[i - 1].isalnum() or expr[i - 1] in "_:")
            if word and boundary and word.group(0) in _SET_OPERATORS:
                parts.append(expr[start:i])
                i += len(word.group(0))
                start = i
                continue
            if word and boundary:
                i += len(word.group(0))  # a name or keyword: skip it whole
                continue
            op = next((o for o in _COMPARISONS if expr.startswith(o, i)), None)
            if op:
                parts.append(expr[start:i])
                i += len(op)
                start = i
                continue
        i += 1
    parts.append(expr[start:])
    return parts


def _wrapped(expr: str) -> str | None:
    """The inside of ``( ... )`` when the parentheses enclose the whole expression."""
    text = expr.strip()
    if not (text.startswith("(") and text.endswith(")")):
        return None
    depth = 0
    for i, c in enumerate(text):
        depth += c == "("
        depth -= c == ")"
        if depth == 0 and i < len(text) - 1:
            return None
    return text[1:-1]


def operands(expr: str) -> list[str]:
    """The vector operands of ``expr``'s comparisons and set operations, thresholds
    (number literals) left out; nested parenthesised conditions are split too.

    >>> operands('(a > 2 * b or a < 0.5 * b) and on () sum(c{x=">"}) > 0.1')
    ['a', '2 * b', 'a', '0.5 * b', 'sum(c{x=">"})']
    >>> operands("time() - max by (m) (t) > 300")
    ['time() - max by (m) (t)']
    >>> operands("max(q) > 4 * 3600")
    ['max(q)']
    """
    result: list[str] = []
    parts = _top_level_split(expr)
    if len(parts) == 1:
        inner = _wrapped(expr)
        if inner is not None and len(_top_level_split(inner)) > 1:
            return operands(inner)
        text = _MODIFIERS.sub("", expr, count=1).strip()
        return [] if _SCALAR.fullmatch(text) else [text]
    for part in parts:
        text = _MODIFIERS.sub("", part, count=1).strip()
        result.extend(operands(text))
    return result


_METRIC = re.compile(r"(?<![\w:$])((?:fraudstream|bytewax)[a-zA-Z0-9_:]*|up)(?![\w:(])")


def metric_names(expr: str) -> set[str]:
    """Metric names (ours, Bytewax's and ``up``) that ``expr`` selects."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return {m.group(1) for m in _METRIC.finditer(without_strings)}


# --- A real Prometheus ----------------------------------------------------------------


def render_config(detector: str, api: str, rules_dir: Path, interval: str = "1s") -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with other targets, interval and rules path."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"]["scrape_interval"] = interval
    config["global"]["evaluation_interval"] = interval
    config["global"]["scrape_timeout"] = interval
    config["rule_files"] = [str(rules_dir / Path(p).name) for p in config["rule_files"]]
    targets = {DETECTOR_JOB: detector, API_JOB: api}
    for job in config["scrape_configs"]:
        job["scrape_interval"] = interval
        job["scrape_timeout"] = interval
        for static in job["static_configs"]:
            static["targets"] = [targets[job["job_name"]]]
    return config


class PrometheusError(AssertionError):
    pass


class Prometheus:
    """``prometheus`` on a free port with a temporary TSDB; ``query`` its HTTP API."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.port = find_free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        self._out = self.log.open("wb")
        self.process = subprocess.Popen(
            [
                require_tool("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def __enter__(self) -> Prometheus:
        self.wait_ready()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PrometheusError("prometheus exited:\n" + self.log.read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.2)
        raise PrometheusError("prometheus not ready:\n" + self.log.read_text()[-3000:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._out.close()

    def api(self, path: str, **params: str) -> Any:
        """``data`` of a successful answer of ``/api/v1/<path>``; raises on an error."""
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            body = json.loads(error.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` now (scalars come back as one sample)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def targets_up(self) -> dict[str, bool]:
        """job -> every active target of the job last scraped fine."""
        jobs: dict[str, bool] = {}
        for target in self.api("targets")["activeTargets"]:
            job = target["labels"]["job"]
            jobs[job] = jobs.get(job, True) and target["health"] == "up"
        return jobs

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]
