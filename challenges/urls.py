from django.urls import path

from challenges.api import (
    ChallengeDeclineApi,
    ChallengeDetailApi,
    ChallengeEvidenceApi,
    ChallengeListCreateApi,
    StakeCreateApi,
)

urlpatterns = [
    path("challenges/", ChallengeListCreateApi.as_view(), name="challenges"),
    path("challenges/<int:challenge_id>/", ChallengeDetailApi.as_view(), name="challenge"),
    path(
        "challenges/<int:challenge_id>/stakes/", StakeCreateApi.as_view(), name="challenge-stakes"
    ),
    path(
        "challenges/<int:challenge_id>/evidence/",
        ChallengeEvidenceApi.as_view(),
        name="challenge-evidence",
    ),
    path(
        "challenges/<int:challenge_id>/decline/",
        ChallengeDeclineApi.as_view(),
        name="challenge-decline",
    ),
]
