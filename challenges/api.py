"""Challenges REST API: explicit input and output serializers, business rules in services."""

from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from challenges.models import Challenge, Stake
from challenges.providers import challenge_payout_summary
from challenges.selectors import challenge_get, challenge_list
from challenges.services import (
    challenge_create,
    challenge_decline,
    challenge_notes_update,
    stake_place,
)
from core.api import (
    AmountField,
    CreateThrottle,
    ErrorSerializer,
    MoneyThrottle,
    NewestFirstPagination,
    StrictCharField,
    serialized,
)
from core.errors import InvalidInput


class UserRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()


class ChallengeOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    description = serializers.CharField()
    category = serializers.CharField()
    status = serializers.CharField()
    result = serializers.CharField()
    due_date = serializers.DateTimeField()
    challenger = UserRefSerializer()
    challenged = UserRefSerializer(allow_null=True)
    yes_total = serializers.IntegerField()
    no_total = serializers.IntegerField()
    yes_count = serializers.IntegerField()
    no_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class PayoutSummarySerializer(serializers.Serializer):
    status = serializers.CharField()
    progress_percent = serializers.FloatField()


class ChallengeDetailOutputSerializer(ChallengeOutputSerializer):
    """The list's fields plus what one challenge's page shows: the evidence, why staff
    settled it as they did, and the progress row of its payout job (null before it has one)."""

    evidence = serializers.CharField()
    resolution_note = serializers.CharField()
    payout = serializers.SerializerMethodField()

    @extend_schema_field(PayoutSummarySerializer(allow_null=True))
    def get_payout(self, challenge: Challenge) -> dict | None:
        return challenge_payout_summary(challenge_id=challenge.pk)


def _detail(challenge_id: int) -> dict:
    return ChallengeDetailOutputSerializer(challenge_get(challenge_id=challenge_id)).data


class ChallengeCreateInputSerializer(serializers.Serializer):
    # Only what a creator may choose: status, totals, escrow and the challenger are never
    # taken from the request (unknown fields are ignored).
    title = serializers.CharField(max_length=200)
    description = serializers.CharField(max_length=5000, required=False, allow_blank=True)
    category = serializers.CharField(max_length=64, required=False, allow_blank=True)
    due_date = serializers.DateTimeField()
    challenged_username = serializers.CharField(max_length=150, required=False, allow_null=True)


class ChallengeListCreateApi(APIView):
    pagination_class = NewestFirstPagination
    throttle_classes = [CreateThrottle]

    @extend_schema(
        parameters=[OpenApiParameter("status", enum=Challenge.Status.values, required=False)],
        responses={200: ChallengeOutputSerializer(many=True)},
    )
    def get(self, request):
        wanted = request.query_params.get("status") or None
        if wanted is not None and wanted not in Challenge.Status.values:
            raise InvalidInput(
                f"status must be one of {', '.join(Challenge.Status.values)}.",
                code="invalid_status",
            )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(challenge_list(status=wanted), request, view=self)
        return paginator.get_paginated_response(ChallengeOutputSerializer(page, many=True).data)

    @extend_schema(
        request=ChallengeCreateInputSerializer,
        responses={
            201: ChallengeOutputSerializer,
            409: OpenApiResponse(ErrorSerializer, "too_many_open_challenges"),
        },
    )
    def post(self, request):
        data = ChallengeCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        challenge = challenge_create(creator=request.user, **data.validated_data)
        return Response(
            ChallengeOutputSerializer(challenge_get(challenge_id=challenge.pk)).data,
            status=status.HTTP_201_CREATED,
        )


class ChallengeDetailApi(APIView):
    @extend_schema(responses={200: ChallengeDetailOutputSerializer})
    def get(self, request, challenge_id: int):
        return Response(_detail(challenge_id))


class EvidenceInputSerializer(serializers.Serializer):
    evidence = StrictCharField(max_length=10_000, allow_blank=True)


class ChallengeEvidenceApi(APIView):
    """The challenge's parties (or staff) state their evidence: text and/or links."""

    @extend_schema(
        request=EvidenceInputSerializer, responses={200: ChallengeDetailOutputSerializer}
    )
    def post(self, request, challenge_id: int):
        data = EvidenceInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        challenge_notes_update(
            challenge_id=challenge_id, actor=request.user, evidence=data.validated_data["evidence"]
        )
        return Response(_detail(challenge_id))


class StakeInputSerializer(serializers.Serializer):
    side = serializers.CharField(max_length=8)
    amount = AmountField()

    def validate_side(self, value: str) -> str:
        if value not in Stake.Side.values:
            raise serializers.ValidationError("side must be 'yes' or 'no'.", code="invalid_side")
        return value


class StakeOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    challenge_id = serializers.IntegerField()
    side = serializers.CharField()
    amount = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class StakeCreateOutputSerializer(serializers.Serializer):
    stake = StakeOutputSerializer()
    challenge = ChallengeOutputSerializer()


class StakeCreateApi(APIView):
    throttle_classes = [MoneyThrottle]

    @extend_schema(
        request=StakeInputSerializer,
        responses={
            201: StakeCreateOutputSerializer,
            409: OpenApiResponse(
                ErrorSerializer, "challenge_not_open, already_staked, amount_out_of_range"
            ),
        },
    )
    def post(self, request, challenge_id: int):
        data = StakeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        stake = stake_place(user=request.user, challenge_id=challenge_id, **data.validated_data)
        return Response(
            {
                "stake": serialized(StakeOutputSerializer, stake),
                "challenge": serialized(ChallengeOutputSerializer, stake.challenge),
            },
            status=status.HTTP_201_CREATED,
        )


class ChallengeDeclineApi(APIView):
    """The challenged user declines: the challenge is cancelled and every stake refunded."""

    @extend_schema(
        request=None,
        responses={
            200: ChallengeOutputSerializer,
            403: OpenApiResponse(ErrorSerializer, "not_challenged_user"),
            409: OpenApiResponse(ErrorSerializer, "challenge_not_open"),
        },
    )
    def post(self, request, challenge_id: int):
        challenge_decline(user=request.user, challenge_id=challenge_id)
        return Response(ChallengeOutputSerializer(challenge_get(challenge_id=challenge_id)).data)
