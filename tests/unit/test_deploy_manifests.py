"""The deployment files agree with the code and with each other.

No Docker engine or cluster is needed: the Dockerfiles, docker-compose.yml and the Kubernetes
manifests under deploy/k8s are read as text and YAML and checked against what the services
really are (their ports, packages and console scripts) and against the settings the platform
really reads. A renamed setting, a new workspace member or a service on a new port breaks a
test here instead of a deployment.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from prosum_platform import settings as settings_module
from prosum_platform.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE_FILE = ROOT / "docker-compose.yml"
EXAMPLE_SECRETS = "secrets.example.yaml"
IMAGE_TAG = "0.1.0"


# service folder -> (Python package, distribution and console script, HTTP port, public?)
SERVICES: dict[str, tuple[str, str, int, bool]] = {
    "identity": ("prosum_identity", "prosum-identity", 8101, True),
    "metering": ("prosum_metering", "prosum-metering", 8102, True),
    "orderbook": ("prosum_orderbook", "prosum-orderbook", 8103, True),
    "settlement": ("prosum_settlement", "prosum-settlement", 8104, True),
    "ledger-adapter": ("prosum_ledger", "prosum-ledger-adapter", 8105, False),
}
PUBLIC = sorted(s for s, (*_, public) in SERVICES.items() if public)
ALL = sorted(SERVICES)


# ------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------


def _docs(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def _k8s_files() -> list[Path]:
    return sorted(K8S.glob("*.yaml")) + sorted(K8S.glob("*.yml"))


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    (doc,) = _docs(K8S / "kustomization.yaml")
    return doc


@pytest.fixture(scope="module")
def resources(kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object kubectl apply -k would create."""
    objects: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        objects.extend(_docs(K8S / name))
    return objects


@pytest.fixture(scope="module")
def example_secrets() -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in _docs(K8S / EXAMPLE_SECRETS)}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    (doc,) = _docs(COMPOSE_FILE)
    return doc


def _find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}"
    return found[0]


def _of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def _main_container(deployment: dict[str, Any]) -> dict[str, Any]:
    name = deployment["metadata"]["name"]
    (container,) = [c for c in _pod_spec(deployment)["containers"] if c["name"] == name]
    return container


def _containers(deployment: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = _pod_spec(deployment)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def _container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or a Service's port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    (match,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return int(match)


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


SERVICE_SETTINGS_MODULES = (
    "prosum_identity.adapters.settings",
    "prosum_metering.adapters.settings",
    "prosum_orderbook.adapters.settings",
    "prosum_settlement.adapters.settings",
    "prosum_ledger.adapters.chain_config",
)


def _settings_modules() -> list[object]:
    import importlib

    modules: list[object] = [settings_module]
    for name in SERVICE_SETTINGS_MODULES:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError:
            continue
    return modules


def _settings_env_names() -> set[str]:
    """Every environment variable the platform's and the services' settings classes read,
    from the classes."""
    names: set[str] = set()
    for obj in (o for module in _settings_modules() for o in vars(module).values()):
        if not (isinstance(obj, type) and issubclass(obj, BaseSettings)) or obj is BaseSettings:
            continue
        prefix = obj.model_config.get("env_prefix", "")
        for field_name, field in obj.model_fields.items():
            alias = field.validation_alias or field.alias
            if isinstance(alias, str):
                names.add(alias.upper())
            elif alias is not None:  # AliasChoices / AliasPath: take the plain names
                names.update(c.upper() for c in getattr(alias, "choices", []) if isinstance(c, str))
            else:
                names.add(f"{prefix}{field_name}".upper())
    return names


PROSUM_NAME = re.compile(r"\bPROSUM_[A-Z0-9_]+\b")


# ------------------------------------------------------------------------------------------
# the services themselves: the table above is what the code says
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("svc", ALL)
def test_service_table_matches_the_code(svc: str) -> None:
    package, dist, port, _ = SERVICES[svc]
    definition = importlib.import_module(f"{package}.bootstrap").DEFINITION
    assert definition.default_port == port
    assert definition.package == package
    assert f"prosum-{definition.name}" == dist
    project = tomllib.loads((ROOT / "services" / svc / "pyproject.toml").read_text())["project"]
    assert project["name"] == dist
    assert project["scripts"][dist].startswith(f"{package}.")


def test_settings_classes_are_found() -> None:
    names = _settings_env_names()
    # a sample the manifests depend on; the full set is derived, not listed
    assert {"PROSUM_ENVIRONMENT", "PROSUM_DB_URL", "PROSUM_KAFKA_BOOTSTRAP_SERVERS"} <= names


# ------------------------------------------------------------------------------------------
# every YAML parses; the kustomization lists the folder
# ------------------------------------------------------------------------------------------


def test_every_yaml_file_parses() -> None:
    files = [*_k8s_files(), COMPOSE_FILE, *sorted((ROOT / "deploy" / "compose").glob("*.yaml"))]
    assert len(files) > 3
    for path in files:
        assert _docs(path), f"{path} is empty"


def test_kustomization_lists_every_manifest(kustomization: dict[str, Any]) -> None:
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), "a manifest is listed twice"
    on_disk = {p.name for p in _k8s_files()} - {"kustomization.yaml", EXAMPLE_SECRETS}
    assert set(listed) == on_disk
    assert EXAMPLE_SECRETS not in listed
    assert kustomization["namespace"] == "prosum"


def test_no_secret_is_applied(resources: list[dict[str, Any]]) -> None:
    # real Secrets come from the cluster's secret manager, never from this repository
    assert _of_kind(resources, "Secret") == []


def test_everything_lives_in_the_prosum_namespace(resources: list[dict[str, Any]]) -> None:
    _find(resources, "Namespace", "prosum")
    for obj in resources:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "prosum", obj["metadata"]["name"]


# ------------------------------------------------------------------------------------------
# per service: Deployment, Service, ServiceAccount, PodDisruptionBudget
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("svc", ALL)
def test_service_has_its_objects(svc: str, resources: list[dict[str, Any]]) -> None:
    deployment = _find(resources, "Deployment", svc)
    service = _find(resources, "Service", svc)
    _find(resources, "ServiceAccount", svc)
    pdb = _find(resources, "PodDisruptionBudget", svc)

    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert _labels_match(selector, pod_labels)
    assert _pod_spec(deployment)["serviceAccountName"] == svc
    assert service["spec"]["type"] == "ClusterIP"
    assert _labels_match(service["spec"]["selector"], pod_labels)
    assert pdb["spec"]["selector"]["matchLabels"] == selector


@pytest.mark.parametrize("svc", ALL)
def test_ports_agree(svc: str, resources: list[dict[str, Any]]) -> None:
    _, dist, port, _ = SERVICES[svc]
    container = _main_container(_find(resources, "Deployment", svc))
    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert container["command"] == [dist, "serve", "--host", "0.0.0.0", "--port", str(port)]
    (service_port,) = _find(resources, "Service", svc)["spec"]["ports"]
    assert service_port["port"] == port
    assert _container_port(container, service_port["targetPort"]) == port


@pytest.mark.parametrize("svc", ALL)
def test_probes(svc: str, resources: list[dict[str, Any]]) -> None:
    port = SERVICES[svc][2]
    container = _main_container(_find(resources, "Deployment", svc))
    expected = {"readinessProbe": "/ready", "livenessProbe": "/health", "startupProbe": "/health"}
    for probe, path in expected.items():
        http = container[probe]["httpGet"]
        assert http["path"] == path, probe
        assert _container_port(container, http["port"]) == port, probe


@pytest.mark.parametrize("svc", ALL)
def test_migrate_init_container(svc: str, resources: list[dict[str, Any]]) -> None:
    _, dist, _, _ = SERVICES[svc]
    deployment = _find(resources, "Deployment", svc)
    (init,) = [c for c in _pod_spec(deployment).get("initContainers", []) if c["name"] == "migrate"]
    assert [*init.get("command", []), *init.get("args", [])] == [dist, "migrate"]
    assert init["image"] == _main_container(deployment)["image"]


@pytest.mark.parametrize("svc", ALL)
def test_image_config_and_secret(
    svc: str, resources: list[dict[str, Any]], example_secrets: dict[str, dict[str, Any]]
) -> None:
    deployment = _find(resources, "Deployment", svc)
    config_maps = {c["metadata"]["name"] for c in _of_kind(resources, "ConfigMap")}
    for container in _containers(deployment):
        assert container["image"] == f"ghcr.io/prosum/{svc}:{IMAGE_TAG}"
        refs = [e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e]
        assert refs and set(refs) <= config_maps
        db_url = [e for e in container["env"] if e["name"] == "PROSUM_DB_URL"]
        assert db_url == [
            {
                "name": "PROSUM_DB_URL",
                "valueFrom": {"secretKeyRef": {"name": f"{svc}-db", "key": "PROSUM_DB_URL"}},
            }
        ]
    assert "PROSUM_DB_URL" in example_secrets[f"{svc}-db"]["stringData"]


@pytest.mark.parametrize("svc", ALL)
def test_hardening_and_resources(svc: str, resources: list[dict[str, Any]]) -> None:
    deployment = _find(resources, "Deployment", svc)
    pod = _pod_spec(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    for container in _containers(deployment):
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, container["name"]
        assert security["allowPrivilegeEscalation"] is False, container["name"]
        assert security["capabilities"]["drop"] == ["ALL"], container["name"]
        tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert len(tmp) == 1 and tmp[0]["name"] in empty_dirs, container["name"]
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][bound]), container["name"]


def test_data_dir_is_writable(resources: list[dict[str, Any]]) -> None:
    # `serve` creates PROSUM_DATA_DIR; the root file system is read-only, /tmp an emptyDir
    data = _find(resources, "ConfigMap", "prosum-config")["data"]
    assert data["PROSUM_DATA_DIR"].startswith("/tmp/")
    assert data["PROSUM_DB_MIGRATE_ON_START"] == "false"  # the init container migrates


@pytest.mark.parametrize("svc", ALL)
def test_disruption_budget_never_blocks_a_drain(svc: str, resources: list[dict[str, Any]]) -> None:
    replicas = _find(resources, "Deployment", svc)["spec"]["replicas"]
    spec = _find(resources, "PodDisruptionBudget", svc)["spec"]
    if "minAvailable" in spec:
        assert spec["minAvailable"] < replicas
    else:
        assert spec["maxUnavailable"] >= 1


def test_only_the_ledger_adapter_gets_the_chain_secret(resources: list[dict[str, Any]]) -> None:
    for deployment in _of_kind(resources, "Deployment"):
        secrets = {
            v["secret"]["secretName"] for v in _pod_spec(deployment)["volumes"] if "secret" in v
        }
        name = deployment["metadata"]["name"]
        assert ("ledger-adapter-chain" in secrets) == (name == "ledger-adapter"), name


# ------------------------------------------------------------------------------------------
# gateway and network policies
# ------------------------------------------------------------------------------------------


def test_http_routes_expose_the_public_services_only(resources: list[dict[str, Any]]) -> None:
    (gateway,) = _of_kind(resources, "Gateway")
    listeners = {listener["name"] for listener in gateway["spec"]["listeners"]}
    backends: dict[str, dict[str, Any]] = {}
    for route in _of_kind(resources, "HTTPRoute"):
        for parent in route["spec"]["parentRefs"]:
            assert parent["name"] == gateway["metadata"]["name"]
            assert parent.get("sectionName", next(iter(listeners))) in listeners
        for rule in route["spec"]["rules"]:
            for backend in rule.get("backendRefs", []):
                assert backend["name"] not in backends, f"{backend['name']} routed twice"
                backends[backend["name"]] = rule
    assert sorted(backends) == PUBLIC
    assert "ledger-adapter" not in backends

    for svc, rule in backends.items():
        assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": f"/{svc}"}}]
        assert {
            "type": "URLRewrite",
            "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}},
        } in rule["filters"]
        (backend,) = rule["backendRefs"]
        (service_port,) = _find(resources, "Service", svc)["spec"]["ports"]
        assert backend["port"] == service_port["port"]


def test_network_policies(resources: list[dict[str, Any]]) -> None:
    policies = _of_kind(resources, "NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert len(deny) == 1
    assert deny[0]["spec"]["policyTypes"] == ["Ingress"]
    assert not deny[0]["spec"].get("ingress"), "the default policy must allow nothing"

    pods = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in _of_kind(resources, "Deployment")
    }
    allowing = [p for p in policies if p["spec"].get("ingress")]
    assert allowing, "nothing may reach the public services"
    reachable: set[str] = set()
    for policy in allowing:
        selector = policy["spec"]["podSelector"]["matchLabels"]
        selected = {name for name, labels in pods.items() if _labels_match(selector, labels)}
        ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
        assert ports == {SERVICES[s][2] for s in selected}
        reachable |= selected
    assert sorted(reachable) == PUBLIC


# ------------------------------------------------------------------------------------------
# settings: every PROSUM_ name is one the platform reads, and the values pass its checks
# ------------------------------------------------------------------------------------------


def _deploy_texts() -> dict[str, str]:
    paths = [
        *_k8s_files(),
        COMPOSE_FILE,
        *sorted((ROOT / "deploy" / "compose").iterdir()),
        *(ROOT / "services" / svc / "Dockerfile" for svc in ALL),
    ]
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in paths}


def test_every_prosum_variable_is_a_setting() -> None:
    allowed = _settings_env_names()
    used: dict[str, set[str]] = {}
    for name, text in _deploy_texts().items():
        for var in PROSUM_NAME.findall(text):
            used.setdefault(var, set()).add(name)
    assert {"PROSUM_DB_URL", "PROSUM_KAFKA_BOOTSTRAP_SERVERS", "PROSUM_ENVIRONMENT"} <= set(used)
    unknown = {var: sorted(files) for var, files in used.items() if var not in allowed}
    assert not unknown, f"not read by prosum_platform.settings: {unknown}"


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("PROSUM_"):
            monkeypatch.delenv(key)


@pytest.mark.parametrize("svc", ALL)
def test_cluster_settings_pass_the_production_checks(
    svc: str,
    resources: list[dict[str, Any]],
    example_secrets: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _clean_env(monkeypatch)
    for key, value in _find(resources, "ConfigMap", "prosum-config")["data"].items():
        monkeypatch.setenv(key, str(value))
    url = example_secrets[f"{svc}-db"]["stringData"]["PROSUM_DB_URL"]
    monkeypatch.setenv("PROSUM_DB_URL", url)
    settings = ServiceSettings(svc)
    assert settings.runtime.environment == "production"
    assert settings.database_url == url


# ------------------------------------------------------------------------------------------
# Dockerfiles
# ------------------------------------------------------------------------------------------

MEMBER_COPY = re.compile(r"^COPY ((?:libs|services)/[^/\s]+)/pyproject\.toml \1/$", re.MULTILINE)


def _dockerfile(svc: str) -> str:
    return (ROOT / "services" / svc / "Dockerfile").read_text(encoding="utf-8")


def _workspace_members() -> set[str]:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members: set[str] = set()
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        members |= {str(p.parent.relative_to(ROOT)) for p in ROOT.glob(f"{pattern}/pyproject.toml")}
    return members


@pytest.mark.parametrize("svc", ALL)
def test_dockerfile_builds_its_own_service(svc: str) -> None:
    package, dist, port, _ = SERVICES[svc]
    text = _dockerfile(svc)
    assert text.count(f"uv sync --frozen --no-dev --package {dist} --no-editable") == 2
    assert f"COPY services/{svc}/ services/{svc}/" in text
    assert f"import importlib.resources as r, {package}.bootstrap" in text
    assert re.search(rf"^EXPOSE {port}$", text, re.MULTILINE)
    assert f"http://127.0.0.1:{port}/health" in text
    (cmd,) = re.findall(r"^CMD (\[.*\])$", text, re.MULTILINE)
    assert json.loads(cmd) == [dist, "serve", "--host", "0.0.0.0", "--port", str(port)]
    assert re.findall(r"^FROM (\S+)", text, re.MULTILINE) == ["python:3.11-slim"] * 2


@pytest.mark.parametrize("svc", ALL)
def test_dockerfile_copies_every_workspace_member(svc: str) -> None:
    # uv reads the whole workspace even for one package: a new member must be copied too
    assert set(MEMBER_COPY.findall(_dockerfile(svc))) == _workspace_members()


@pytest.mark.parametrize("svc", ALL)
def test_dockerfile_user_is_the_pod_user(svc: str, resources: list[dict[str, Any]]) -> None:
    (user,) = re.findall(r"^USER (\d+):(\d+)$", _dockerfile(svc), re.MULTILINE)
    assert int(user[0]) != 0
    security = _pod_spec(_find(resources, "Deployment", svc))["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (int(user[0]), int(user[1]))


def test_dockerfiles_are_alike() -> None:
    """The five differ only in the service's name, package and port."""
    normalised = {}
    for svc, (package, dist, port, _) in SERVICES.items():
        text = MEMBER_COPY.sub("", _dockerfile(svc))
        for token, mark in ((dist, "@DIST@"), (package, "@PACKAGE@"), (svc, "@SVC@")):
            text = text.replace(token, mark)
        normalised[svc] = text.replace(str(port), "@PORT@")
    reference = normalised["identity"]
    for svc, text in normalised.items():
        assert text == reference, f"services/{svc}/Dockerfile drifted from the others"


# ------------------------------------------------------------------------------------------
# docker-compose.yml
# ------------------------------------------------------------------------------------------


def _compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


@pytest.mark.parametrize("svc", ALL)
def test_compose_runs_each_service(svc: str, compose: dict[str, Any]) -> None:
    port = SERVICES[svc][2]
    service = compose["services"][svc]
    assert service["build"]["context"] == "."
    dockerfile = ROOT / service["build"]["dockerfile"]
    assert dockerfile == ROOT / "services" / svc / "Dockerfile"
    assert dockerfile.is_file()
    assert service["image"] == f"ghcr.io/prosum/{svc}:{IMAGE_TAG}"
    assert f"{port}:{port}" in [str(p) for p in service["ports"]]
    assert _compose_env(service)["PROSUM_ENVIRONMENT"] == "production"
    for dependency in ("postgres", "kafka"):
        assert service["depends_on"][dependency]["condition"] == "service_healthy"
        assert "healthcheck" in compose["services"][dependency]


def test_compose_has_no_other_prosum_service(compose: dict[str, Any]) -> None:
    built = sorted(name for name, s in compose["services"].items() if "build" in s)
    assert built == ALL


def test_compose_databases_are_separate_and_created(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    mounts = [v.split(":") for v in postgres["volumes"] if v.startswith("./")]
    (init_sql,) = [ROOT / src for src, dst, *_ in mounts if "docker-entrypoint-initdb.d" in dst]
    sql = init_sql.read_text(encoding="utf-8")
    databases = dict(re.findall(r"CREATE DATABASE (\w+) OWNER (\w+);", sql))
    roles = set(re.findall(r"CREATE ROLE (\w+) LOGIN", sql))

    seen = set()
    url_shape = re.compile(r"postgresql\+psycopg://(\w+):[^@]+@postgres:5432/(\w+)$")
    for svc in ALL:
        url = _compose_env(compose["services"][svc])["PROSUM_DB_URL"]
        match = url_shape.match(url)
        assert match, url
        user, database = match.groups()
        assert databases.get(database) == user and user in roles
        seen.add(database)
    assert len(seen) == len(ALL), "services share a database"


def test_compose_mounts_exist(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert (ROOT / volume.split(":")[0]).is_file(), volume


@pytest.mark.parametrize("svc", ALL)
def test_compose_settings_pass_the_production_checks(
    svc: str, compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean_env(monkeypatch)
    env = _compose_env(compose["services"][svc])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = ServiceSettings(svc)
    assert settings.runtime.environment == "production"
    assert settings.database_url == env["PROSUM_DB_URL"]
