"""The wallet API: a user's own balance and recent transfers; staff deposits."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import AmountField, IsStaff
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
    idempotency_key = serializers.CharField(max_length=100, required=False)


class DepositOutputSerializer(serializers.Serializer):
    user_id = serializers.IntegerField()
    balance = serializers.IntegerField()
    posted = serializers.BooleanField()


class DepositApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(request=DepositInputSerializer, responses={200: DepositOutputSerializer})
    def post(self, request, user_id: int):
        data = DepositInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        posted = wallet_deposit(user_id=user_id, actor=request.user, **data.validated_data)
        wallet = wallet_get(user_id=user_id)
        return Response({"user_id": user_id, "balance": wallet.balance, "posted": posted})
