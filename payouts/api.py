from functools import partial

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from core.api import (
    CreateThrottle,
    ErrorSerializer,
    IsStaff,
    NewestFirstPagination,
    StaffThrottle,
    StrictCharField,
)
from core.services import dead_letter_replay
from payouts.dashboard import console_dashboard, dashboard_json
from payouts.models import PayoutEntry
from payouts.selectors import (
    dead_letter_list,
    payout_attempts_by_entry,
    payout_entry_list,
    payout_job_get,
    payout_job_list,
    payout_job_progress,
)
from payouts.services.connected_accounts import payout_account_get, payout_account_open
from payouts.services.jobs import (
    challenge_cancel,
    challenge_resolve,
    payout_job_cancel,
    payout_job_pause,
    payout_job_resume,
    payout_job_retry_failed,
)


class JobStartedOutputSerializer(serializers.Serializer):
    payout_job_id = serializers.IntegerField()
    status_url = serializers.CharField()


def _job_started(request, job) -> Response:
    url = reverse("payout-job-detail", args=[job.pk], request=request)
    return Response({"payout_job_id": job.pk, "status_url": url}, status=202)


class ResolveInputSerializer(serializers.Serializer):
    # Checked by the service, which answers invalid_result / invalid_rail with stable codes.
    result = serializers.CharField()
    rail = serializers.CharField(required=False)
    note = StrictCharField(
        required=False, allow_blank=True, help_text="Why this outcome (stored and audited)."
    )


class StaffApi(APIView):
    """A staff endpoint: allowed to staff who may take its ``staff_action`` (each maps to a
    Django permission in ``core.permissions``), throttled per staff user (``THROTTLE_STAFF``)."""

    permission_classes = [IsStaff]
    throttle_classes = [StaffThrottle]
    staff_action = "staff"


CONFLICT_OF_INTEREST = OpenApiResponse(
    ErrorSerializer,
    "permission_denied, conflict_of_interest (you created it, were challenged in it or staked "
    "on it)",
)


class ChallengeResolveApi(StaffApi):
    staff_action = "challenge.resolve"

    @extend_schema(
        request=ResolveInputSerializer,
        responses={
            202: JobStartedOutputSerializer,
            403: CONFLICT_OF_INTEREST,
            409: OpenApiResponse(ErrorSerializer, "already_resolved, challenge_not_resolvable"),
        },
    )
    def post(self, request, challenge_id: int):
        data = ResolveInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = challenge_resolve(
            challenge_id=challenge_id, actor=request.user, **data.validated_data
        )
        return _job_started(request, job)


class CancelInputSerializer(serializers.Serializer):
    note = StrictCharField(
        required=False, allow_blank=True, help_text="Why it is cancelled (stored and audited)."
    )


class ChallengeCancelApi(StaffApi):
    staff_action = "challenge.cancel"

    @extend_schema(
        request=CancelInputSerializer,
        responses={
            202: JobStartedOutputSerializer,
            403: CONFLICT_OF_INTEREST,
            409: OpenApiResponse(ErrorSerializer, "already_resolved, challenge_not_cancellable"),
        },
    )
    def post(self, request, challenge_id: int):
        # A body is optional here: an empty POST cancels without a note.
        data = CancelInputSerializer(data=request.data or {})
        data.is_valid(raise_exception=True)
        job = challenge_cancel(challenge_id=challenge_id, actor=request.user, **data.validated_data)
        return _job_started(request, job)


class PayoutJobOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    challenge = serializers.IntegerField()
    kind = serializers.CharField()
    rail = serializers.CharField()
    status = serializers.CharField()
    total_entries = serializers.IntegerField()
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    total_amount = serializers.IntegerField()
    paid_amount = serializers.IntegerField()
    fee_amount = serializers.IntegerField()
    uncertain = serializers.IntegerField(
        help_text="Entries of a cancelled Stripe job that may have reached Stripe and are being "
        "looked up there before they are recorded as paid or cancelled."
    )
    progress_percent = serializers.FloatField()
    rate = serializers.FloatField(allow_null=True, help_text="Entries finished per second.")
    eta_seconds = serializers.FloatField(allow_null=True)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    error = serializers.CharField(help_text="Why the job is failed; empty otherwise.")


def _job_output(job) -> dict:
    return PayoutJobOutputSerializer(payout_job_progress(job=job)).data


class StatusFilterSerializer(serializers.Serializer):
    status = serializers.CharField(required=False)


def _status_filtered_page(view, request, select, output):
    """One page of ``select(status=...)`` (``?status=`` optional), each row through ``output``."""
    filters = StatusFilterSerializer(data=request.query_params)
    filters.is_valid(raise_exception=True)
    paginator = view.pagination_class()
    page = paginator.paginate_queryset(select(**filters.validated_data), request, view)
    return paginator.get_paginated_response([output(row) for row in page])


class JobFilterSerializer(StatusFilterSerializer):
    challenge = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)


class PayoutJobListApi(StaffApi):
    staff_action = "payout_job.view"
    pagination_class = NewestFirstPagination

    @extend_schema(
        parameters=[JobFilterSerializer], responses={200: PayoutJobOutputSerializer(many=True)}
    )
    def get(self, request):
        filters = JobFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        challenge_id = filters.validated_data.get("challenge")
        return _status_filtered_page(
            self,
            request,
            partial(payout_job_list, challenge_id=challenge_id),
            _job_output,
        )


class PayoutAttemptOutputSerializer(serializers.Serializer):
    """One call to Stripe about an entry (``PayoutAttempt``), under each entry's ``attempts``."""

    attempt = serializers.IntegerField()
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField()
    duration_ms = serializers.IntegerField()
    outcome = serializers.CharField()
    error_code = serializers.CharField()
    http_status = serializers.IntegerField(allow_null=True)
    stripe_request_id = serializers.CharField()
    transfer_id = serializers.CharField()


class EntryOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    user = serializers.IntegerField(source="user_id")
    username = serializers.CharField(source="user.username")
    stake_amount = serializers.IntegerField()
    amount = serializers.IntegerField()
    status = serializers.CharField()
    attempt_count = serializers.IntegerField()
    first_attempt_at = serializers.DateTimeField(allow_null=True)
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    failure_reason = serializers.CharField()
    last_error = serializers.CharField()
    stripe_transfer_id = serializers.CharField()
    reversed_amount = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)
    # Set by the view from one query for the whole page (``payout_attempts_by_entry``).
    attempts = PayoutAttemptOutputSerializer(many=True, source="attempt_history")


class EntryFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=PayoutEntry.Status.values, required=False)
    failure_reason = serializers.CharField(required=False, max_length=64)


class EntryCursorPagination(CursorPagination):
    # Keyset on the id: page 10,000 of a million entries costs what page 1 does.
    ordering = "id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class PayoutEntryListApi(StaffApi):
    """A job's entries, filtered by ``status`` and ``failure_reason`` (cursor pagination),
    each with its Stripe attempts."""

    staff_action = "payout_job.view"
    pagination_class = EntryCursorPagination

    @extend_schema(
        parameters=[EntryFilterSerializer], responses={200: EntryOutputSerializer(many=True)}
    )
    def get(self, request, job_id: int):
        filters = EntryFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        job = payout_job_get(job_id=job_id)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(
            payout_entry_list(job_id=job.pk, **filters.validated_data), request, self
        )
        history = payout_attempts_by_entry(entry_ids=[entry.pk for entry in page])
        for entry in page:
            entry.attempt_history = history[entry.pk]
        return paginator.get_paginated_response(EntryOutputSerializer(page, many=True).data)


class DashboardApi(StaffApi):
    """The staff console's figures (the admin index shows the same)."""

    staff_action = "console.view"

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        return Response(dashboard_json(console_dashboard()))


class PayoutJobDetailApi(StaffApi):
    staff_action = "payout_job.view"

    @extend_schema(responses={200: PayoutJobOutputSerializer})
    def get(self, request, job_id: int):
        return Response(_job_output(payout_job_get(job_id=job_id)))


JOB_CONTROLS = {
    "pause": payout_job_pause,
    "resume": payout_job_resume,
    "cancel": payout_job_cancel,
    "retry-failed": payout_job_retry_failed,
}


class PayoutJobControlApi(StaffApi):
    """``pause``, ``resume``, ``cancel`` or ``retry-failed``: one service and one permission
    each, audited."""

    control: str = ""

    @property
    def staff_action(self) -> str:
        return f"payout_job.{self.control}"

    @extend_schema(
        request=None,
        responses={
            200: PayoutJobOutputSerializer,
            409: OpenApiResponse(ErrorSerializer, "invalid_job_state, no_failed_entries"),
        },
    )
    def post(self, request, job_id: int):
        job = JOB_CONTROLS[self.control](job_id=job_id, actor=request.user)
        return Response(_job_output(job))


class DeadLetterOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    task_id = serializers.CharField()
    task_name = serializers.CharField()
    args = serializers.JSONField()
    kwargs = serializers.JSONField()
    queue = serializers.CharField()
    subject = serializers.CharField()
    error = serializers.CharField()
    attempts = serializers.IntegerField()
    status = serializers.CharField()
    created_at = serializers.DateTimeField()
    replayed_at = serializers.DateTimeField(allow_null=True)
    replay_task_id = serializers.CharField()


class DeadLetterListApi(StaffApi):
    staff_action = "dead_letter.view"
    pagination_class = NewestFirstPagination

    @extend_schema(
        parameters=[StatusFilterSerializer], responses={200: DeadLetterOutputSerializer(many=True)}
    )
    def get(self, request):
        return _status_filtered_page(
            self, request, dead_letter_list, lambda letter: DeadLetterOutputSerializer(letter).data
        )


class DeadLetterReplayApi(StaffApi):
    staff_action = "dead_letter.replay"

    @extend_schema(
        request=None,
        responses={
            200: DeadLetterOutputSerializer,
            409: OpenApiResponse(ErrorSerializer, "already_replayed"),
        },
    )
    def post(self, request, dead_letter_id: int):
        letter = dead_letter_replay(dead_letter_id=dead_letter_id, actor=request.user)
        return Response(DeadLetterOutputSerializer(letter).data)


class PayoutAccountOutputSerializer(serializers.Serializer):
    account_id = serializers.CharField()
    payouts_enabled = serializers.BooleanField()
    requirements_due = serializers.ListField(
        child=serializers.CharField(), help_text="What Stripe still needs from you."
    )


class PayoutAccountOpenedOutputSerializer(serializers.Serializer):
    account_id = serializers.CharField()
    payouts_enabled = serializers.BooleanField()
    onboarding_url = serializers.URLField(
        help_text="Stripe's hosted onboarding; single use, expires within minutes."
    )


class PayoutAccountApi(APIView):
    """The caller's Stripe Connect Express account, where Stripe-rail winnings are sent."""

    # Opening one calls Stripe: counted like creating a challenge.
    throttle_classes = [CreateThrottle]

    @extend_schema(responses={200: PayoutAccountOutputSerializer})
    def get(self, request):
        account = payout_account_get(user_id=request.user.pk)
        return Response(
            PayoutAccountOutputSerializer(
                {
                    "account_id": account.stripe_account_id,
                    "payouts_enabled": account.payouts_enabled,
                    "requirements_due": account.requirements_due,
                }
            ).data
        )

    @extend_schema(request=None, responses={200: PayoutAccountOpenedOutputSerializer})
    def post(self, request):
        link = payout_account_open(user=request.user)
        return Response(PayoutAccountOpenedOutputSerializer(link).data)
