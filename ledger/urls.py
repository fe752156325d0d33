from django.urls import path

from ledger.api import DepositApi, WalletApi

urlpatterns = [
    path("wallet/", WalletApi.as_view(), name="wallet"),
    path("admin/wallets/<int:user_id>/deposit/", DepositApi.as_view(), name="wallet-deposit"),
]
