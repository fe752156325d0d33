"""``POST /api/webhooks/stripe/``: Stripe's event deliveries.

No session or token authentication (Stripe signs the body instead; the service verifies it),
and the raw body is handed over untouched because the signature covers its exact bytes.
"""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from payouts.services.stripe_webhooks import stripe_webhook_receive


class WebhookOutputSerializer(serializers.Serializer):
    received = serializers.BooleanField()
    duplicate = serializers.BooleanField()


class StripeWebhookApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(request=None, responses={200: WebhookOutputSerializer})
    def post(self, request):
        applied = stripe_webhook_receive(
            payload=request.body, signature=request.headers.get("Stripe-Signature")
        )
        return Response({"received": True, "duplicate": not applied})
