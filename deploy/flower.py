"""Flower, never open: ``python -m deploy.flower [flower options]``.

Flower shows every task's arguments and can revoke tasks and shut workers down, so it starts
only behind basic auth: ``FLOWER_BASIC_AUTH`` (``user:password``, read by Flower itself) must
be set, or it refuses to start and says why. ``make up`` sets it to the admin login.
"""

import os
import sys


def main() -> None:
    if not os.environ.get("FLOWER_BASIC_AUTH"):
        sys.exit(
            "Flower needs FLOWER_BASIC_AUTH=user:password: it shows every task's arguments and "
            "can revoke tasks, so it never starts open."
        )
    os.execvp("celery", ["celery", "-A", "config", "flower", *sys.argv[1:]])  # noqa: S606


if __name__ == "__main__":
    main()
