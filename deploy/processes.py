"""The process list: every role the product runs, written once.

``make up`` (``deploy/run.py``) starts these roles itself; ``python -m deploy.render`` writes the
compose file, the Kubernetes manifests and the systemd units from them, and ``make lint`` runs
``python -m deploy.render --check`` so that a hand-edited copy fails the build. Change a role
here, then run ``python -m deploy.render``.

A role's command is the same everywhere except for what each platform spells its own way, which
a :class:`Dialect` supplies: the part of a Celery node name that tells replicas apart, the log
level, and the addresses to listen on. ``tests/deploy`` starts every role of every file.
"""

from dataclasses import dataclass
from typing import Literal

APP = "config"
WEB_PORT = 8000
FLOWER_PORT = 5555
# The Host header that health checks send. It must be in ALLOWED_HOSTS, or Django answers 400
# and the check fails; every deploy file adds it there. A fixed name, because what a probe sends
# by default (Kubernetes: the pod's IP) cannot be listed in advance.
PROBE_HOST = "localhost"
# Seconds a worker may need, after the hard time limit killed its longest task, to hand the
# message back and exit.
STOP_MARGIN_SECONDS = 30


@dataclass(frozen=True)
class Dialect:
    """How one platform spells the parts of a command that differ between platforms."""

    # What follows "@" in a Celery node name: unique per machine, container or pod.
    node_host: str
    log_level: str
    web_address: str
    flower_address: str
    web_port: int = WEB_PORT
    flower_port: int = FLOWER_PORT
    # Appended to the node name of a role that runs several times on one machine (systemd's
    # template units: payouts-1@host, payouts-2@host).
    replica_suffix: str = ""


@dataclass(frozen=True)
class Resources:
    """Kubernetes requests and limits; sized from what each role runs (see the README)."""

    cpu: str
    memory: str
    cpu_limit: str
    memory_limit: str


@dataclass(frozen=True)
class Autoscale:
    """KEDA's Redis list scaler: one replica more for every ``list_length`` waiting messages."""

    min_replicas: int
    max_replicas: int
    list_length: int


@dataclass(frozen=True)
class Role:
    name: str
    kind: Literal["web", "worker", "beat", "flower"]
    summary: str
    resources: Resources
    # Seconds a stopping process gets before SIGKILL (Kubernetes, compose, systemd alike).
    grace_seconds: int = 30
    replicas: int = 1
    # Workers only: the queues consumed, the pool (Celery's -P) and its size, and the
    # node-name prefix. A size of None leaves -c out: the worker takes Celery's
    # worker_concurrency from the settings (an environment variable, set at run time).
    queues: tuple[str, ...] = ()
    pool: Literal["prefork", "threads"] = "prefork"
    concurrency: int | None = 1
    node: str = ""
    autoscale: Autoscale | None = None

    def node_name(self, dialect: Dialect) -> str:
        suffix = dialect.replica_suffix if self.kind == "worker" else ""
        return f"{self.node}{suffix}@{dialect.node_host}"

    def argv(self, dialect: Dialect) -> list[str]:
        """The command, with ``gunicorn``/``celery`` as bare program names."""
        if self.kind == "web":
            # gunicorn's sync workers, 2 x cores + 1 for two cores: a process takes a connection
            # only when it is free, so waiting requests queue in the kernel in arrival order.
            # Threads kept each client's connection in the process that accepted it, and the
            # clients of the busier process waited longer: the stake bench's p99 fell by about
            # a fifth without them (README, Performance). One request per connection: the
            # buffering proxy in front (README, Deploy) keeps the clients' connections open.
            # --timeout: a sync worker busy on one request this long is killed; it is longer
            # than what a request may wait on Stripe or a statement (30 s each by default), so
            # those answer with their own errors first.
            return [
                "gunicorn",
                f"{APP}.wsgi",
                "--config",
                "python:deploy.gunicorn",
                "--bind",
                f"{dialect.web_address}:{dialect.web_port}",
                "--workers",
                "5",
                "--timeout",
                "60",
                "--access-logfile",
                "-",
                "--log-level",
                dialect.log_level,
            ]
        celery = ["celery", "-A", APP]
        if self.kind == "worker":
            pool = [] if self.pool == "prefork" else ["-P", self.pool]
            size = [] if self.concurrency is None else ["-c", str(self.concurrency)]
            return [
                *celery,
                "worker",
                "-Q",
                ",".join(self.queues),
                *pool,
                *size,
                "-n",
                self.node_name(dialect),
                "-l",
                dialect.log_level,
            ]
        if self.kind == "beat":
            # Remote control makes beat answer `celery inspect ping` while its scheduler ticks,
            # which is its health check.
            return [
                *celery,
                "beat",
                "--enable-remote-control",
                "-n",
                self.node_name(dialect),
                "-l",
                dialect.log_level,
            ]
        # deploy/flower.py refuses to start Flower without basic-auth credentials.
        return [
            "python",
            "-m",
            "deploy.flower",
            f"--address={dialect.flower_address}",
            f"--port={dialect.flower_port}",
        ]

    def ping_argv(self, node_name: str) -> list[str]:
        """The health check of a worker or beat: its own node answers a ping."""
        return ["celery", "-A", APP, "inspect", "ping", "-d", node_name, "-t", "10"]


# The longest task each queue runs (payouts.tasks, notifications.tasks, challenges.tasks, or
# CELERY_TASK_TIME_LIMIT for a task without its own) plus STOP_MARGIN_SECONDS: a warm shutdown
# waits for the running task, so a shorter grace period would SIGKILL it mid-batch.
# tests/deploy checks these against the registered tasks and routes.
ROLES = (
    Role(
        name="web",
        kind="web",
        summary="the API, the admin and the health checks (gunicorn, 5 sync processes)",
        # Each process holds about 95 MB once warm.
        resources=Resources(cpu="250m", memory="512Mi", cpu_limit="1", memory_limit="1Gi"),
        # gunicorn's graceful timeout (30 s) for requests in flight, plus the margin.
        grace_seconds=30 + STOP_MARGIN_SECONDS,
        replicas=2,
    ),
    Role(
        name="worker-payouts",
        kind="worker",
        summary="job expansion and ledger payouts (slices and batches)",
        resources=Resources(cpu="500m", memory="512Mi", cpu_limit="2", memory_limit="1Gi"),
        grace_seconds=600 + STOP_MARGIN_SECONDS,  # payout_job_expand_task
        replicas=2,
        queues=("payouts",),
        concurrency=2,
        node="payouts",
        # Slices and batches re-send themselves, PAYOUT_PARALLELISM (2) chains per job: a
        # backlog beyond that is several jobs at once, and each pod takes two.
        autoscale=Autoscale(min_replicas=1, max_replicas=8, list_length=2),
    ),
    Role(
        name="worker-stripe",
        kind="worker",
        summary="Stripe Connect transfers (threads waiting on the network, shared rate limit)",
        resources=Resources(cpu="250m", memory="640Mi", cpu_limit="1", memory_limit="1Gi"),
        grace_seconds=600 + STOP_MARGIN_SECONDS,  # payout_job_reconcile_task
        replicas=2,
        queues=("payouts_stripe",),
        # One process of STRIPE_WORKER_CONCURRENCY threads (16): a Stripe batch spends its
        # time in Stripe's answer and the rate limit's sleep, which release the GIL, so
        # threads hold the limit where prefork needed a process per call in flight.
        pool="threads",
        concurrency=None,
        node="stripe",
        # STRIPE_RATE_LIMIT is shared by every worker. One pod spends about 6 ms of CPU per
        # Stripe request (README, Performance), about 0.6 of a core at 100/s; the second is
        # for failover and CPU headroom, more would only wait for tokens. A backlog is other
        # jobs' batches, 16 per Stripe job.
        autoscale=Autoscale(min_replicas=1, max_replicas=3, list_length=16),
    ),
    Role(
        name="worker-ops",
        kind="worker",
        summary="deadline sweeps and warnings, notifications, everything else",
        resources=Resources(cpu="250m", memory="512Mi", cpu_limit="1", memory_limit="1Gi"),
        grace_seconds=900 + STOP_MARGIN_SECONDS,  # payout_job_notify_task
        queues=("scheduler", "notifications", "default"),
        concurrency=2,
        node="ops",
    ),
    Role(
        name="beat",
        kind="beat",
        summary="the periodic-task scheduler (exactly one; its tasks are safe to run twice)",
        resources=Resources(cpu="50m", memory="192Mi", cpu_limit="500m", memory_limit="384Mi"),
        node="beat",
    ),
    Role(
        name="flower",
        kind="flower",
        summary="queue and worker inspection for operators",
        resources=Resources(cpu="50m", memory="256Mi", cpu_limit="500m", memory_limit="512Mi"),
    ),
)

# Applies the schema before a release's processes start (see each deploy file for how).
MIGRATE = ["python", "manage.py", "migrate", "--noinput"]


def role(name: str) -> Role:
    return next(r for r in ROLES if r.name == name)
