"""The project's URLs plus one view that fails unexpectedly (tests/core/test_malformed_input.py)."""

from django.urls import path
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import AllowAny

from config.urls import handler500
from config.urls import urlpatterns as project_urls

__all__ = ["handler500", "urlpatterns"]


@api_view(["GET"])
@permission_classes([AllowAny])
def crash(request):
    raise RuntimeError("an unexpected failure")


urlpatterns = [path("api/test-crash/", crash), *project_urls]
