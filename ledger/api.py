"""The wallet API: a user's own balance and recent transfers; staff deposits."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import (
    AmountField,
    ErrorSerializer,
    IsStaff,
    MoneyThrottle,
    StaffThrottle,
    StrictCharField,
)
from ledger.selectors import account_transfers, wallet_get
from ledger.services import wallet_deposit


class TransferOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    amount = serializers.IntegerField()
    direction = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_direction(self, transfer) -> str:
        return "in" if transfer.credit_account_id == self.context["account_id"] else "out"


class WalletOutputSerializer(serializers.Serializer):
    balance = serializers.IntegerField()
    currency = serializers.CharField()
    transfers = TransferOutputSerializer(many=True)


class WalletApi(APIView):
    @extend_schema(responses={200: WalletOutputSerializer})
    def get(self, request):
        wallet = wallet_get(user_id=request.user.pk)
        transfers = account_transfers(account_id=wallet.pk)
        return Response(
            {
                "balance": wallet.balance,
                "currency": wallet.currency,
                "transfers": TransferOutputSerializer(
                    transfers, many=True, context={"account_id": wallet.pk}
                ).data,
            }
        )


class DepositInputSerializer(serializers.Serializer):
    amount = AmountField()
    idempotency_key = StrictCharField(
        max_length=100,
        help_text="Names this deposit: a retry with the same key (same user and amount) "
        "returns the first deposit and moves nothing. Use a fresh UUID per deposit.",
    )


class DepositOutputSerializer(serializers.Serializer):
    deposit_id = serializers.IntegerField()
    user_id = serializers.IntegerField()
    amount = serializers.IntegerField()
    idempotency_key = serializers.CharField()
    created_at = serializers.DateTimeField()
    posted = serializers.BooleanField(
        help_text="False when this answer repeats an earlier deposit with the same key."
    )
    balance = serializers.IntegerField(help_text="The wallet's balance now.")


class DepositApi(APIView):
    permission_classes = [IsStaff]
    staff_action = "wallet.deposit"
    throttle_classes = [StaffThrottle, MoneyThrottle]

    @extend_schema(
        request=DepositInputSerializer,
        responses={
            200: DepositOutputSerializer,
            403: OpenApiResponse(ErrorSerializer, "permission_denied, self_deposit"),
            404: OpenApiResponse(ErrorSerializer, "user_not_found"),
            409: OpenApiResponse(
                ErrorSerializer,
                "idempotency_key_reused, deposit_daily_limit, amount_out_of_range",
            ),
        },
    )
    def post(self, request, user_id: int):
        data = DepositInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = wallet_deposit(user_id=user_id, actor=request.user, **data.validated_data)
        deposit = result.deposit
        return Response(
            {
                "deposit_id": deposit.pk,
                "user_id": deposit.user_id,
                "amount": deposit.amount,
                "idempotency_key": deposit.idempotency_key,
                "created_at": deposit.created_at,
                "posted": not result.replayed,
                "balance": wallet_get(user_id=user_id).balance,
            }
        )
