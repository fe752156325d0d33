"""Every role of every deploy file starts as written and becomes ready.

For each file (``make up``'s process table, compose, Kubernetes, systemd) the roles are read
from the file, expanded as that platform would (``tests/deploy/platforms.py``), started as real
processes against the test database and broker, and then must be ready: web and Flower answer
their health checks with the probe's own Host header, every worker and beat answers a ping under
its own node name (two replicas of a pool under two names), beat sends a due task, and the
platform's own health checks and one-shot commands (migrations) succeed.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from celery.utils.nodenames import host_format
from django.conf import settings
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from prometheus_client.parser import text_string_to_metric_families

from config.celery import app
from deploy import render
from deploy.processes import PROBE_HOST, ROLES, WEB_PORT
from deploy.run import Supervisor, prepare_env, process_table
from tests.deploy import platforms
from tests.deploy.platforms import HttpCheck, Launch

READY_SECONDS = 60
METRICS_TOKEN = "deploy-files-test-metrics"
HEALTHZ_COUNTER = "django_http_requests_total_by_view_transport_method"
# A queue nobody consumes: beat sends the test's periodic task there, which shows it ticking.
TICK_QUEUE = "deploy-test-tick"
PATH = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"


@pytest.fixture(scope="module")
def secrets_env(worker_env) -> dict[str, str]:
    """What a real host keeps in its secrets: here the test database, broker and a key."""
    return {
        "DATABASE_URL": worker_env["DATABASE_URL"],
        "REDIS_URL": settings.REDIS_URL,
        "DJANGO_SECRET_KEY": "deploy-files-test-" + "k" * 50,
        "METRICS_TOKEN": METRICS_TOKEN,
        "FLOWER_BASIC_AUTH": "ops:deploy-files-test",
    }


@pytest.fixture(scope="module")
def broker() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


@pytest.fixture
def tick_task(transactional_db, broker) -> Iterator[None]:
    """A periodic task due every second, committed where beat reads its schedule (the
    transactional test's flush removes it)."""
    every_second = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name=TICK_QUEUE,
        task="tests.deploy.tick",
        interval=every_second,
        queue=TICK_QUEUE,
        expire_seconds=60,
    )
    yield
    broker.delete(TICK_QUEUE)


def _own_host(launch: Launch) -> list[str]:
    """The command in a UTS namespace with the container's or pod's hostname, as a container
    runtime gives it (Celery's %h reads it)."""
    if launch.hostname is None:
        return launch.argv
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    hostname = ["sh", "-c", 'hostname "$0" && exec "$@"', launch.hostname]
    return ["unshare", "--uts", *user, "--", *hostname, *launch.argv]


def _env(launch_env: dict[str, str]) -> dict[str, str]:
    return {"PATH": PATH, "LANG": "C.UTF-8", **launch_env}


def _node(launch: Launch) -> str | None:
    if "-n" not in launch.argv:
        return None
    name = launch.argv[launch.argv.index("-n") + 1]
    return host_format(name, host=launch.hostname or socket.gethostname())


def _http_ok(launch: Launch, check: HttpCheck) -> bool:
    port = launch.ports.get(check.port, check.port)
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{check.path}", headers={"Host": check.host}
    )
    try:
        with urllib.request.urlopen(request, timeout=3) as response:  # noqa: S310
            return response.status == 200
    except OSError:
        return False


def _healthz_count(launch: Launch, check: HttpCheck) -> float:
    """Requests to /healthz the web role's metrics count, over every one of its processes."""
    port = launch.ports.get(check.port, check.port)
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics",
        headers={"Host": check.host, "Authorization": f"Bearer {METRICS_TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == HEALTHZ_COUNTER
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("view") == "healthz"
    )


def _metrics_add_up(launch: Launch) -> None:
    """A scrape reaches one gunicorn process; what it reports must be what all of them
    served (deploy/gunicorn.py): twenty requests, twenty counted, whichever process answered."""
    # Files whose probe is a command (compose) serve on the role's container port.
    http = [c for c in launch.checks if isinstance(c, HttpCheck)]
    check = http[0] if http else HttpCheck("/healthz", WEB_PORT, PROBE_HOST)
    before = _healthz_count(launch, check)
    for _ in range(20):
        assert _http_ok(launch, check)
    assert _healthz_count(launch, check) - before == 20


def _log_tail(supervisor: Supervisor, name: str) -> str:
    return (supervisor.logs / f"{name}.log").read_text(errors="replace")[-3000:]


def _run_all(commands: list[tuple[str, list[str], dict[str, str]]]) -> None:
    """Run commands side by side (each is a Python process: the machine's cores are few);
    every one must exit 0."""
    procs = [
        (
            label,
            subprocess.Popen(
                argv,
                cwd=render.ROOT,
                env=_env(env),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            ),
        )
        for label, argv, env in commands
    ]
    for label, proc in procs:
        output, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0, f"{label} exited {proc.returncode}:\n{output.decode()[-2000:]}"


def _start_and_check(launches: list[Launch], logs: Path, broker: redis.Redis) -> None:
    broker.delete(TICK_QUEUE)
    supervisor = Supervisor(env={}, logs=logs)
    try:
        for launch in launches:
            supervisor.start(launch.name, _own_host(launch), env=_env(launch.env))
        nodes = {launch.name: _node(launch) for launch in launches}
        named = [node for node in nodes.values() if node]
        assert len(set(named)) == len(named), f"node names repeat: {sorted(named)}"

        pending = {launch.name: launch for launch in launches}
        deadline = time.monotonic() + READY_SECONDS
        while pending:
            if dead := [name for name in supervisor.dead() if name in pending]:
                pytest.fail(f"{dead[0]} exited:\n{_log_tail(supervisor, dead[0])}")
            if time.monotonic() > deadline:
                name = next(iter(pending))
                pytest.fail(f"{sorted(pending)} not ready:\n{_log_tail(supervisor, name)}")
            answered = {node for reply in app.control.ping(timeout=0.5) for node in reply}
            ticked = broker.llen(TICK_QUEUE) > 0
            for name, launch in list(pending.items()):
                http = [c for c in launch.checks if isinstance(c, HttpCheck)]
                ready = all(_http_ok(launch, check) for check in http)
                if nodes[name]:
                    ready = ready and nodes[name] in answered
                if launch.role.kind == "beat":
                    ready = ready and ticked
                if ready:
                    del pending[name]
        for launch in launches:
            if launch.role.kind == "web":
                _metrics_add_up(launch)

        _run_all(
            [
                (f"{launch.name}'s health check", check, launch.env)
                for launch in launches
                for check in launch.checks
                if not isinstance(check, HttpCheck)
            ]
        )
    finally:
        supervisor.stop()


def _make_up(secrets_env: dict[str, str]) -> tuple[list, list[Launch]]:
    """``make up`` runs migrations itself (deploy/run.py), then its process table."""
    port, flower_port = platforms.free_port(), platforms.free_port()
    table = process_table(port, flower_port)
    env = {**prepare_env(), **secrets_env}
    launches = []
    for role in ROLES:
        launch = Launch(role=role, name=role.name, argv=table[role.name], env=env)
        if role.kind == "web":
            launch.checks = [HttpCheck("/healthz", port, PROBE_HOST)]
        elif role.kind == "flower":
            launch.checks = [HttpCheck("/healthcheck", flower_port, PROBE_HOST)]
        launches.append(launch)
    return [], launches


def _compose(secrets_env: dict[str, str]) -> tuple[list, list[Launch]]:
    # The file's own postgres and redis services stand aside for the test's servers, the way an
    # operator points compose at managed ones: DATABASE_URL and REDIS_URL set when running it.
    shell = {name: secrets_env[name] for name in ("DATABASE_URL", "REDIS_URL")}
    migrate, env = platforms.compose_migrate(shell, secrets_env)
    return [("migrate", migrate, env)], platforms.compose_launches(shell, secrets_env)


def _kubernetes(secrets_env: dict[str, str]) -> tuple[list, list[Launch]]:
    one_shots = [(" ".join(argv), argv, env) for argv, env in platforms.k8s_one_shots(secrets_env)]
    return one_shots, platforms.k8s_launches(secrets_env)


def _systemd(secrets_env: dict[str, str]) -> tuple[list, list[Launch]]:
    migrate, env = platforms.systemd_command("stakehold-migrate.service", "", secrets_env)
    return [("migrate", migrate, env)], platforms.systemd_launches(secrets_env)


PLATFORMS = {
    "make up": _make_up,
    "compose": _compose,
    "kubernetes": _kubernetes,
    "systemd": _systemd,
}


# The roles run against committed data (beat reads its schedule), hence a transactional test.
@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
@pytest.mark.usefixtures("tick_task")
@pytest.mark.parametrize("platform", PLATFORMS)
def test_every_role_starts_and_becomes_ready(platform, secrets_env, broker, tmp_path):
    one_shots, launches = PLATFORMS[platform](secrets_env)
    _run_all(one_shots)
    _start_and_check(launches, tmp_path, broker)


def test_the_deploy_files_are_rendered_from_the_process_list():
    assert render.main(["--check"]) == 0


def _longest_time_limit(queues: tuple[str, ...]) -> int:
    app.loader.import_default_modules()  # what a worker does at start: autodiscovery
    limits = [
        task.time_limit or app.conf.task_time_limit
        for name, task in app.tasks.items()
        if not name.startswith("celery.")
        and app.amqp.router.route({}, name)["queue"].name in queues
    ]
    return max(limits)


def test_grace_periods_outlast_the_longest_task_of_each_pool():
    docs = platforms.k8s_documents()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    compose = yaml.safe_load((render.DEPLOY / "compose.yaml").read_text())["services"]
    for role in ROLES:
        if role.kind == "worker":
            assert role.grace_seconds > _longest_time_limit(role.queues), role.name
        pod = deployments[f"stakehold-{role.name}"]["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] == role.grace_seconds
        assert compose[role.name]["stop_grace_period"] == f"{role.grace_seconds}s"
        unit = f"stakehold-{role.name}{'@' if role.kind == 'worker' else ''}.service"
        assert platforms.read_unit(unit)["TimeoutStopSec"] == [str(role.grace_seconds)]


def test_kubernetes_manifests_are_production_shaped():
    docs = platforms.k8s_documents()
    by_kind: dict[str, list[dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    for deployment in by_kind["Deployment"]:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"] + pod.get("initContainers", []):
            assert container["image"] == render.IMAGE
            assert not container["image"].endswith(":latest")
            assert {"requests", "limits"} <= container["resources"].keys()
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
        (container,) = pod["containers"]
        assert "livenessProbe" in container, deployment["metadata"]["name"]
    web = next(d for d in by_kind["Deployment"] if d["metadata"]["name"] == "stakehold-web")
    assert web["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == WEB_PORT
    assert by_kind["Job"][0]["metadata"]["name"].startswith("stakehold-migrate-")
    budgets = {d["metadata"]["name"] for d in by_kind["PodDisruptionBudget"]}
    assert budgets == {f"stakehold-{r.name}" for r in ROLES if r.kind in {"web", "worker"}}

    keda = list(yaml.safe_load_all((render.DEPLOY / "k8s" / "keda.yaml").read_text()))
    scaled = {
        d["spec"]["scaleTargetRef"]["name"]: [
            t["metadata"]["listName"] for t in d["spec"]["triggers"]
        ]
        for d in keda
        if d["kind"] == "ScaledObject"
    }
    assert scaled == {
        "stakehold-worker-payouts": ["payouts"],
        "stakehold-worker-stripe": ["payouts_stripe"],
    }


def test_flower_never_starts_without_basic_auth():
    env = {key: value for key, value in os.environ.items() if key != "FLOWER_BASIC_AUTH"}
    done = subprocess.run(
        [sys.executable, "-m", "deploy.flower", "--port=1"],
        cwd=render.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert "FLOWER_BASIC_AUTH" in done.stderr


def test_the_stripe_worker_runs_threads_sized_by_its_setting_and_no_other_worker_does():
    # Celery sizes a worker started without -c by worker_concurrency, which the settings take
    # from STRIPE_WORKER_CONCURRENCY: only the Stripe worker may leave -c out.
    assert settings.CELERY_WORKER_CONCURRENCY == settings.STRIPE_WORKER_CONCURRENCY
    for role in ROLES:
        if role.kind != "worker":
            continue
        argv = role.argv(render.COMPOSE)
        stripe = "payouts_stripe" in role.queues
        assert (argv[argv.index("-P") + 1] if "-P" in argv else "prefork") == (
            "threads" if stripe else "prefork"
        ), role.name
        assert ("-c" in argv) is not stripe, role.name
