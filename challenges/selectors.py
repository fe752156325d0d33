"""Reads shared by the challenges API and admin."""

from django.db.models import QuerySet

from challenges.models import Challenge
from core.errors import NotFound


def challenge_list(*, status: str | None = None) -> QuerySet[Challenge]:
    """Challenges newest first, optionally of one status (served by ``challenge_status_idx``)."""
    challenges = Challenge.objects.select_related("challenger", "challenged").order_by("-id")
    return challenges.filter(status=status) if status else challenges


def challenge_get(*, challenge_id: int) -> Challenge:
    challenge = (
        Challenge.objects.select_related("challenger", "challenged").filter(pk=challenge_id).first()
    )
    if challenge is None:
        raise NotFound("No such challenge.", code="challenge_not_found")
    return challenge
