from django.urls import path

from payouts.api import (
    JOB_CONTROLS,
    ChallengeCancelApi,
    ChallengeResolveApi,
    DashboardApi,
    DeadLetterListApi,
    DeadLetterReplayApi,
    PayoutAccountApi,
    PayoutEntryListApi,
    PayoutJobControlApi,
    PayoutJobDetailApi,
    PayoutJobListApi,
)
from payouts.webhooks import StripeWebhookApi

urlpatterns = [
    path("webhooks/stripe/", StripeWebhookApi.as_view(), name="stripe-webhook"),
    path("payout-account/", PayoutAccountApi.as_view(), name="payout-account"),
    path(
        "admin/challenges/<int:challenge_id>/resolve/",
        ChallengeResolveApi.as_view(),
        name="challenge-resolve",
    ),
    path(
        "admin/challenges/<int:challenge_id>/cancel/",
        ChallengeCancelApi.as_view(),
        name="challenge-cancel",
    ),
    path("admin/payout-jobs/", PayoutJobListApi.as_view(), name="payout-job-list"),
    path("admin/payout-jobs/<int:job_id>/", PayoutJobDetailApi.as_view(), name="payout-job-detail"),
    path(
        "admin/payout-jobs/<int:job_id>/entries/",
        PayoutEntryListApi.as_view(),
        name="payout-job-entries",
    ),
    path("admin/dashboard/", DashboardApi.as_view(), name="console-dashboard"),
    *[
        path(
            f"admin/payout-jobs/<int:job_id>/{action}/",
            PayoutJobControlApi.as_view(control=action),
            name=f"payout-job-{action}",
        )
        for action in JOB_CONTROLS
    ],
    path("admin/dead-letters/", DeadLetterListApi.as_view(), name="dead-letter-list"),
    path(
        "admin/dead-letters/<int:dead_letter_id>/replay/",
        DeadLetterReplayApi.as_view(),
        name="dead-letter-replay",
    ),
]
