"""CPU time of processes on this machine: the work figures that do not depend on the load of
other processes (a process's CPU seconds count only what it ran)."""

import psutil


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of one process so far; None when it is not on this machine,
    gone, or not readable (a database server elsewhere)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def tree_cpu(pid: int) -> dict[int, float]:
    """User + system CPU seconds of a process and each of its live children, by pid."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    seconds = {}
    for proc in procs:
        cpu = process_cpu(proc.pid)
        if cpu is not None:
            seconds[proc.pid] = cpu
    return seconds
