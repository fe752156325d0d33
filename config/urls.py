from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from core.api import healthz, readyz
from payouts.api import DepositApi, WalletApi
from users.api import RegisterApi, TokenApi

api = [
    path("auth/register/", RegisterApi.as_view(), name="register"),
    path("auth/token/", TokenApi.as_view(), name="token"),
    path("wallet/", WalletApi.as_view(), name="wallet"),
    path("admin/wallets/<int:user_id>/deposit/", DepositApi.as_view(), name="wallet-deposit"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include(api)),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
]
