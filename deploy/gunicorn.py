"""gunicorn's settings for the web role (``gunicorn -c python:deploy.gunicorn``).

The web role runs several worker processes, and a Prometheus scrape reaches one of them: so
each process writes its HTTP metrics to files in a folder of this server's own, and the
``/metrics`` view adds them up (prometheus_client's multiprocess mode, ``core/metrics.py``).
The folder is made fresh when the server starts, before any worker imports
prometheus_client, and the files of a worker that exits are marked dead.
"""

import os
import tempfile

if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="stakehold-metrics-")


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
