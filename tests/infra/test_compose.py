"""docker-compose.yml, validated statically (there is no Docker engine here).

Images pinned, published ports on loopback by default, a health check on every service, secrets
only from .env, every environment variable the pipeline code reads set where that code runs, the
GPU profile reserving NVIDIA devices, the worker image built from infra/Dockerfile, and the Ray
cluster behind token auth with .env kept out of git.
"""

from __future__ import annotations

import ast
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict = COMPOSE["services"]
ENV_EXAMPLE = {
    line.split("=", 1)[0]: line.split("=", 1)[1]
    for line in (REPO / ".env.example").read_text().splitlines()
    if line.strip() and not line.lstrip().startswith("#")
}
VAR = re.compile(r"(?<!\$)\$\{([A-Z0-9_]+)(?::?[-?]([^}]*))?\}")  # $${X} is escaped: the container's own
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|AUTH_STRING|ACCESS_KEY")
# Where pipeline code runs: the worker (the Ray driver) and every Ray node.
CODE_SERVICES = ("prefect-worker", "ray-head", "ray-worker", "ray-worker-gpu")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} with ``env`` (default: nothing set)."""
    env = env or {}

    def sub(m: re.Match) -> str:
        if m.group(1) in env:
            return env[m.group(1)]
        return m.group(2) if m.group(0).startswith(f"${{{m.group(1)}:-") else ""

    return VAR.sub(sub, value)


def env_of(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def code_env_reads() -> set[str]:
    """Environment variables the pipeline code reads (os.environ[...], .get, os.getenv; not setdefault),
    plus the ``{{ $VAR }}`` templates of prefect.yaml that the worker resolves."""
    names: set[str] = set()
    for pkg in ("lift_core", "flows", "tasks", "data_catalog"):
        for path in (REPO / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args \
                        and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                    target = ast.unparse(node.func.value)
                    if (target == "os.environ" and node.func.attr == "get") or ast.unparse(node.func) == "os.getenv":
                        names.add(node.args[0].value)
                elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ" \
                        and isinstance(node.slice, ast.Constant) and isinstance(node.ctx, ast.Load):
                    names.add(node.slice.value)
    names |= set(re.findall(r"\{\{\s*\$([A-Z0-9_]+)\s*\}\}", (REPO / "prefect.yaml").read_text()))
    return names


def test_the_stack_has_every_service():
    assert {"postgres", "redis", "prefect-server", "prefect-services", "prefect-worker", "ray-head", "ray-worker",
            "ray-worker-gpu", "minio"} <= set(SERVICES)
    assert any(v.startswith("postgres-data:/var/lib/postgresql/data") for v in SERVICES["postgres"]["volumes"])
    assert "postgres-data" in COMPOSE["volumes"] and "minio-data" in COMPOSE["volumes"]
    assert "--no-services" in SERVICES["prefect-server"]["command"]
    assert SERVICES["prefect-services"]["command"][-2:] == ["services", "start"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_images_are_pinned_or_built_from_the_project(name):
    svc = SERVICES[name]
    image = interpolate(svc["image"])
    assert ":" in image and not image.endswith(":latest"), image
    if "build" in svc:
        assert (REPO / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()


def test_the_prefect_images_match_the_installed_prefect():
    import prefect

    for name in ("prefect-server", "prefect-services"):
        assert SERVICES[name]["image"].split(":")[1].startswith(f"{prefect.__version__}-"), name


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_health_check(name):
    test = SERVICES[name].get("healthcheck", {}).get("test")
    assert test and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name


@pytest.mark.parametrize("name", sorted(n for n, s in SERVICES.items() if s.get("ports")))
def test_published_ports_bind_to_loopback_by_default(name):
    for spec in SERVICES[name]["ports"]:
        assert isinstance(spec, str) and interpolate(spec).count(":") == 2, f"{name}: {spec!r} must name a host address"
        assert interpolate(spec).split(":")[0] == "127.0.0.1", (name, spec)
        assert interpolate(spec, {k: v for k, v in ENV_EXAMPLE.items() if v}).split(":")[0] == "127.0.0.1"


def test_secrets_come_only_from_env():
    text = (REPO / "docker-compose.yml").read_text()
    for name, svc in SERVICES.items():
        for key, value in env_of(name).items():
            if SECRET_NAME.search(key):
                assert VAR.fullmatch(value), f"{name}.{key} must be a ${{VAR}} from .env, not written in the file"
    for m in VAR.finditer(text):
        assert m.group(1) in ENV_EXAMPLE, f"${{{m.group(1)}}} is not documented in .env.example"
        if SECRET_NAME.search(m.group(1)) and m.group(1) != "HF_TOKEN":
            assert m.group(0).startswith(f"${{{m.group(1)}:?"), f"secret {m.group(1)} must be required, not defaulted"
    # The server's auth string comes from the environment; clients send the same one.
    assert env_of("prefect-server")["PREFECT_SERVER_API_AUTH_STRING"].startswith("${PREFECT_AUTH_STRING:?")
    assert env_of("prefect-worker")["PREFECT_API_AUTH_STRING"].startswith("${PREFECT_AUTH_STRING:?")


def test_the_api_and_its_services_keep_events_and_concurrency_leases_in_redis(monkeypatch):
    """The API (``--no-services``) and the background services are two processes. The GPU limit's
    leases live in Redis, which both reach: in the API's memory, the services' repossessor would never
    see them and never free the slots of a holder that died (issue 26). The settings are read back
    through Prefect's own settings model, so a misspelt name fails here."""
    from prefect.settings import Settings

    server, services = env_of("prefect-server"), env_of("prefect-services")
    assert server == services  # one definition for both processes
    placeholders = {k: f"<{k.lower()}>" for k in ENV_EXAMPLE}
    for key, value in server.items():
        monkeypatch.setenv(key, interpolate(value, placeholders))
    settings = Settings()
    assert settings.server.concurrency.lease_storage == "prefect_redis.lease_storage"
    assert settings.server.events.messaging_broker == settings.server.events.messaging_cache == "prefect_redis.messaging"
    assert server["PREFECT_REDIS_MESSAGING_HOST"] == "redis" and "redis" in SERVICES
    assert server["PREFECT_REDIS_MESSAGING_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    assert SERVICES["redis"]["command"][-1] == "${REDIS_PASSWORD:?set REDIS_PASSWORD in .env}"  # --requirepass
    for name in ("prefect-server", "prefect-services"):
        # The official image, which installs prefect[redis] (prefect-redis: the lease storage and messaging).
        assert SERVICES[name]["image"].startswith("prefecthq/prefect:"), name
    assert "redis" in SERVICES["prefect-server"]["depends_on"] and "prefect-server" in SERVICES["prefect-services"]["depends_on"]


def test_every_variable_the_code_reads_is_set_where_the_code_runs():
    reads = code_env_reads()
    assert {"LIFT_REPO", "LIFT_RAY_ADDRESS"} <= reads  # the scan sees what it must
    worker = env_of("prefect-worker")
    assert reads <= set(worker), sorted(reads - set(worker))
    assert worker["LIFT_REPO"] == "/opt/lift" and worker["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    s3 = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "FSSPEC_S3_ENDPOINT_URL"}
    for name in CODE_SERVICES:
        env = env_of(name)
        assert s3 <= set(env), name
        # s3fs (fsspec's FSSPEC_S3_*) and the clients that read AWS's own names (delta-rs) reach one MinIO.
        endpoints = {env[k] for k in ("FSSPEC_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3") if k in env}
        assert endpoints == {"http://minio:9000"}, (name, endpoints)
        if "AWS_REGION" in env:
            assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"], name


def test_worker_and_ray_share_the_project_image_with_shared_memory_for_ray():
    images = {interpolate(SERVICES[n]["image"]) for n in CODE_SERVICES}
    assert len(images) == 1
    for name in CODE_SERVICES:
        assert SERVICES[name]["build"]["dockerfile"] == "infra/Dockerfile"
        assert interpolate(SERVICES[name]["shm_size"]).endswith(("gb", "g")), name
    dockerfile = (REPO / "infra/Dockerfile").read_text()
    assert "torch==2.14.1" in dockerfile and "pip install" in dockerfile and "COPY lift_core" in dockerfile
    assert (REPO / "infra/worker_entrypoint.sh").stat().st_mode & 0o111


def test_the_worker_serves_the_pool_of_the_deployments():
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    pools = {d["work_pool"]["name"] for d in deployments}
    entry = (REPO / "infra/worker_entrypoint.sh").read_text()
    assert pools == {"local"} and 'pool="${LIFT_WORK_POOL:-local}"' in entry and "--type process" in entry
    assert "--with-healthcheck" in entry  # what the worker's health check calls


def test_ray_workers_join_the_head_and_the_gpu_profile_reserves_nvidia_devices():
    assert "--head" in SERVICES["ray-head"]["command"]
    for name in ("ray-worker", "ray-worker-gpu"):
        assert "--address=ray-head:6379" in SERVICES[name]["command"]
        assert SERVICES[name]["depends_on"]["ray-head"]["condition"] == "service_healthy"
    gpu = SERVICES["ray-worker-gpu"]
    assert gpu["profiles"] == ["gpu"] and "profiles" not in SERVICES["ray-worker"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_dependencies_wait_for_healthy_services():
    for name, svc in SERVICES.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in SERVICES and cond["condition"] == "service_healthy", (name, dep)


def test_the_ray_cluster_requires_token_auth_from_env():
    """Every Ray node and the Ray driver (the Prefect worker) run with token auth on one shared token
    from .env: the head never starts open beside the MinIO root keys (issue 18, finding 7)."""
    for name in CODE_SERVICES:
        env = env_of(name)
        assert env.get("RAY_AUTH_MODE") == "token", name
        assert env.get("RAY_AUTH_TOKEN", "").startswith("${RAY_AUTH_TOKEN:?"), name
    assert ENV_EXAMPLE.get("RAY_AUTH_TOKEN"), ".env.example must document RAY_AUTH_TOKEN"


def test_env_is_git_ignored_and_its_example_is_not():
    def ignored(name: str) -> bool:
        found = subprocess.run(["git", "check-ignore", "--no-index", "-q", name], cwd=REPO, capture_output=True, check=False)
        if found.returncode in (0, 1):
            return found.returncode == 0
        # Not a git checkout (an unpacked archive): the rule must still be there, literally.
        return name in {line.strip().lstrip("/") for line in (REPO / ".gitignore").read_text().splitlines()}

    assert ignored(".env"), ".env (the compose secrets) must be in .gitignore"
    assert not ignored(".env.example"), ".env.example documents the variables and is committed"


def test_ray_floor_turns_token_auth_on_by_default():
    """Ray turns token auth on by default for local instances from 2.59: older versions are refused."""
    from packaging.requirements import Requirement

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (ray,) = [Requirement(d) for d in deps if Requirement(d).name == "ray"]
    assert {"data", "train"} <= ray.extras
    assert not ray.specifier.contains("2.58.0") and not ray.specifier.contains("2.50.0")
    assert ray.specifier.contains("2.59.0") and ray.specifier.contains("2.60.0")
