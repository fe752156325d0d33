"""Each deploy file read as its platform reads it.

For every role a reader returns the processes the platform would start: the command after the
platform's own expansion (compose's ``${VAR:-default}``, Kubernetes' ``$(VAR)``, systemd's
specifiers and ``${VAR}``), the environment the process would get, its hostname, and the
platform's own health checks. What only a real host has is stood in for, and said where:
the secrets (a ``.env``, a Secret, ``/etc/stakehold/env``) are the test's database, broker and
key; the image's ``/app`` and the units' ``/opt/stakehold`` are this checkout; a container's
hostname is set in a UTS namespace of its own; a container's port is published on a free one.
"""

import re
import secrets
import shlex
import socket
from dataclasses import dataclass, field

import yaml

from deploy import render
from deploy.processes import FLOWER_PORT, PROBE_HOST, ROLES, WEB_PORT, Role

ROOT = render.ROOT
IMAGE_ROOT = "/app"  # the Dockerfile's WORKDIR


@dataclass
class HttpCheck:
    path: str
    port: int  # the container's port; Launch.ports maps it to the one used here
    host: str


@dataclass
class Launch:
    role: Role
    name: str  # unique among the file's launches: role plus replica
    argv: list[str]
    env: dict[str, str]
    hostname: str | None = None  # a container's or pod's own; None: this machine's
    # What the platform runs to decide the process is healthy: commands or HTTP requests.
    checks: list[list[str] | HttpCheck] = field(default_factory=list)
    # Container port -> the free port that stands for it here.
    ports: dict[int, int] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def publish(launch: Launch, container_port: int) -> None:
    """Stand a free port in for the container's: a container has its own network, this test
    shares the machine's. Rewrites the port where the command and the checks name it."""
    port = launch.ports[container_port] = free_port()

    def swap(arg: str) -> str:
        return re.sub(rf"(?<=[:=]){container_port}\b", str(port), arg)

    launch.argv = [swap(a) for a in launch.argv]
    launch.checks = [c if isinstance(c, HttpCheck) else [swap(a) for a in c] for c in launch.checks]


def image_env(secrets_env: dict[str, str]) -> dict[str, str]:
    """The Dockerfile's ENV (``/app`` is this checkout) plus the secrets."""
    text = (ROOT / "deploy" / "Dockerfile").read_text().replace("\\\n", " ")
    env = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, _, value = pair.partition("=")
                env[key] = value.replace(IMAGE_ROOT, str(ROOT))
    return {**env, **secrets_env}


# --- compose --------------------------------------------------------------------------------
_COMPOSE_VAR = re.compile(r"\$\$|\$\{(\w+)(:?-)?([^}]*)\}|\$(\w+)")


def compose_interpolate(value, shell: dict[str, str]):
    """Compose's interpolation of every string in the file: ``${VAR:-default}`` (default when
    unset or empty), ``${VAR-default}`` (when unset), ``${VAR}``, ``$VAR``, ``$$`` for ``$``."""
    if isinstance(value, dict):
        return {k: compose_interpolate(v, shell) for k, v in value.items()}
    if isinstance(value, list):
        return [compose_interpolate(v, shell) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        if match.group(2) == ":-":
            return shell.get(name) or match.group(3)
        if match.group(2) == "-":
            return shell.get(name, match.group(3))
        return shell.get(name, "")

    return _COMPOSE_VAR.sub(one, value)


def _compose_check(test: list[str]) -> list[str]:
    kind, *rest = test
    return ["sh", "-c", rest[0]] if kind == "CMD-SHELL" else rest


def compose_launches(shell: dict[str, str], secrets_env: dict[str, str]) -> list[Launch]:
    raw = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose_interpolate(raw, shell)["services"]
    launches = []
    for role in ROLES:
        service = services[role.name]
        for replica in range(service.get("deploy", {}).get("replicas", 1)):
            # Docker names a container's host after its id, and exports it as HOSTNAME.
            hostname = secrets.token_hex(6)
            env = {**image_env(secrets_env), **service["environment"], "HOSTNAME": hostname}
            launch = Launch(
                role=role,
                name=f"{role.name}-{replica + 1}",
                argv=service["command"],
                env=env,
                hostname=hostname,
                checks=[_compose_check(service["healthcheck"]["test"])],
            )
            for mapping in service.get("ports", []):
                publish(launch, int(mapping.rsplit(":", 1)[1]))
            launches.append(launch)
    return launches


def compose_migrate(shell: dict[str, str], secrets_env: dict[str, str]) -> tuple[list, dict]:
    raw = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    service = compose_interpolate(raw, shell)["services"]["migrate"]
    return service["command"], {**image_env(secrets_env), **service["environment"]}


# --- Kubernetes -----------------------------------------------------------------------------
_K8S_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def k8s_expand(text: str, defined: dict[str, str]) -> str:
    """``$(VAR)`` becomes the variable's value when the container's ``env`` defines it, and
    stays as written otherwise; ``$$`` is a literal ``$``."""

    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        return defined.get(match.group(1), match.group(0))

    return _K8S_VAR.sub(one, text)


def k8s_documents() -> list[dict]:
    return list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "stakehold.yaml").read_text()))


def k8s_container_env(
    container: dict, docs: list[dict], pod_name: str, secrets_env: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """The container's whole environment, and the part its ``env`` list defines (the only
    variables a command may expand here)."""
    config_maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    env = image_env({})
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= config_maps[source["configMapRef"]["name"]]
        else:
            env |= secrets_env
    defined: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            value = k8s_expand(var["value"], defined)
        elif "fieldRef" in var["valueFrom"]:
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            value = pod_name
        else:
            ref = var["valueFrom"]["configMapKeyRef"]
            value = config_maps[ref["name"]][ref["key"]]
        defined[var["name"]] = value
    return {**env, **defined}, defined


def _k8s_checks(container: dict) -> list[list[str] | HttpCheck]:
    checks: list[list[str] | HttpCheck] = []
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container.get(kind)
        if probe is None:
            continue
        if "exec" in probe:
            # Probes' commands are run as written: no $(VAR) expansion.
            check: list[str] | HttpCheck = probe["exec"]["command"]
        else:
            get = probe["httpGet"]
            # Without a Host header the kubelet sends the pod's IP.
            headers = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
            host = headers.get("Host", f"10.0.0.7:{get['port']}")
            check = HttpCheck(get["path"], get["port"], host)
        if check not in checks:
            checks.append(check)
    return checks


def k8s_launches(secrets_env: dict[str, str], replicas: int = 2) -> list[Launch]:
    """Each Deployment's container; pools that KEDA scales (no replica count) get ``replicas``
    pods, like the others, so that their node names can be told apart."""
    docs = k8s_documents()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    launches = []
    for role in ROLES:
        spec = deployments[f"stakehold-{role.name}"]["spec"]
        (container,) = spec["template"]["spec"]["containers"]
        count = replicas if role.kind == "worker" else 1
        for replica in range(count):
            pod = f"stakehold-{role.name}-5d8f7c9b4-{secrets.token_hex(3)[:5]}"
            env, defined = k8s_container_env(container, docs, pod, secrets_env)
            launch = Launch(
                role=role,
                name=f"{role.name}-{replica + 1}",
                argv=[k8s_expand(a, defined) for a in container["command"]],
                env=env,
                hostname=pod,
                checks=_k8s_checks(container),
            )
            for port in container.get("ports", []):
                publish(launch, port["containerPort"])
            launches.append(launch)
    return launches


def k8s_one_shots(secrets_env: dict[str, str]) -> list[tuple[list[str], dict[str, str]]]:
    """The migration Job's container and every distinct init container, ready to run."""
    docs = k8s_documents()
    containers = []
    for doc in docs:
        if doc["kind"] == "Job":
            containers += doc["spec"]["template"]["spec"]["containers"]
        elif doc["kind"] == "Deployment":
            containers += doc["spec"]["template"]["spec"].get("initContainers", [])
    runs = []
    for container in containers:
        env, defined = k8s_container_env(container, docs, "stakehold-one-shot", secrets_env)
        argv = [k8s_expand(a, defined) for a in container["command"]]
        if argv not in [run[0] for run in runs]:
            runs.append((argv, env))
    return runs


# --- systemd --------------------------------------------------------------------------------
def read_unit(name: str) -> dict[str, list[str]]:
    """A unit's settings, each with every value it is given (``Environment=`` may repeat)."""
    settings: dict[str, list[str]] = {}
    for line in (ROOT / "deploy" / "systemd" / name).read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def systemd_specifiers(text: str, instance: str) -> str:
    """The specifiers the units use; any other one fails the test rather than pass unexpanded."""
    known = {"i": instance, "I": instance, "H": socket.gethostname(), "%": "%"}
    return re.sub(r"%(.)", lambda m: known[m.group(1)], text)


def systemd_env_substitute(arg: str, env: dict[str, str]) -> str:
    """ExecStart's ``${VAR}`` / ``$VAR`` from Environment= and EnvironmentFile=; ``$$`` is ``$``."""
    return re.sub(
        r"\$\$|\$\{(\w+)\}|\$(\w+)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1) or m.group(2), ""),
        arg,
    )


def systemd_command(unit: str, instance: str, secrets_env: dict[str, str]):
    settings = read_unit(unit)
    env: dict[str, str] = {}
    for assignment in settings.get("Environment", []):
        key, _, value = systemd_specifiers(assignment, instance).partition("=")
        env[key] = value
    # EnvironmentFile= is read after Environment= and wins; here it holds the secrets.
    env |= secrets_env
    (exec_start,) = settings["ExecStart"]
    argv = [
        systemd_env_substitute(systemd_specifiers(word, instance), env)
        for word in shlex.split(exec_start)
    ]
    # The units expect the checkout in SYSTEMD_ROOT with its virtualenv; here, this one.
    assert settings["WorkingDirectory"] == [render.SYSTEMD_ROOT]
    assert argv[0].startswith(render.SYSTEMD_BIN + "/")
    argv[0] = argv[0].removeprefix(render.SYSTEMD_BIN + "/")
    return argv, env


def systemd_launches(secrets_env: dict[str, str], instances: tuple[str, ...] = ("1", "2")):
    launches = []
    for role in ROLES:
        template = role.kind == "worker"
        unit = f"stakehold-{role.name}{'@' if template else ''}.service"
        for instance in instances if template else ("",):
            argv, env = systemd_command(unit, instance, secrets_env)
            launch = Launch(role=role, name=f"{role.name}-{instance or 1}", argv=argv, env=env)
            if role.kind in {"web", "flower"}:
                # No health check of its own: check what a reverse proxy would reach.
                port = WEB_PORT if role.kind == "web" else FLOWER_PORT
                path = "/healthz" if role.kind == "web" else "/healthcheck"
                launch.checks = [HttpCheck(path, port, PROBE_HOST)]
                publish(launch, port)
            launches.append(launch)
    return launches
