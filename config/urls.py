from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from core.api import healthz, readyz
from core.metrics import metrics_view
from ledger.models import Account, Transfer
from users.api import LogoutAllApi, LogoutApi, PasswordChangeApi, RegisterApi, TokenApi

# JSON for API callers, Django's page for the admin (core.api.server_error).
handler500 = "core.api.server_error"

api = [
    path("auth/register/", RegisterApi.as_view(), name="register"),
    path("auth/token/", TokenApi.as_view(), name="token"),
    path("auth/logout/", LogoutApi.as_view(), name="logout"),
    path("auth/logout-all/", LogoutAllApi.as_view(), name="logout-all"),
    path("auth/password/", PasswordChangeApi.as_view(), name="password-change"),
    # The apps' addresses do not overlap, so their order only decides how many includes a
    # request fails through first, each failure costing Django a list of what it tried: the
    # busiest (challenges and stakes, then notifications) come first, staff's last.
    path("", include("challenges.urls")),
    path("", include("notifications.urls")),
    path("", include("ledger.urls")),
    path("", include("payouts.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]

# The ledger's admin pages also answer at the addresses they had while the ledger lived in
# payouts, so staff bookmarks and links in old notes keep working.
ledger_admin_old_addresses = [
    path(
        f"admin/payouts/{model._meta.model_name}/", include(admin.site.get_model_admin(model).urls)
    )
    for model in (Account, Transfer)
]

urlpatterns = [
    *ledger_admin_old_addresses,
    path("admin/", admin.site.urls),
    path("api/", include(api)),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
]
