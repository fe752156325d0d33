"""Notifications REST API: the caller's own notifications and Pusher channel authorization."""

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import ErrorSerializer
from notifications.selectors import notification_list
from notifications.services import notification_mark_read, pusher_channel_authorize


class NotificationOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    challenge_id = serializers.IntegerField(allow_null=True)
    title = serializers.CharField()
    body = serializers.CharField()
    priority = serializers.CharField()
    data = serializers.JSONField()
    created_at = serializers.DateTimeField()
    delivered_at = serializers.DateTimeField(allow_null=True)
    read_at = serializers.DateTimeField(allow_null=True)


class NotificationPagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 200


class NotificationListApi(APIView):
    pagination_class = NotificationPagination

    @extend_schema(
        parameters=[OpenApiParameter("unread", bool, required=False)],
        responses={200: NotificationOutputSerializer(many=True)},
    )
    def get(self, request):
        unread = request.query_params.get("unread", "").lower() in {"1", "true", "yes"}
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(
            notification_list(user=request.user, unread=unread), request, view=self
        )
        return paginator.get_paginated_response(NotificationOutputSerializer(page, many=True).data)


class NotificationReadApi(APIView):
    @extend_schema(request=None, responses={200: NotificationOutputSerializer})
    def post(self, request, notification_id: int):
        notification = notification_mark_read(user=request.user, notification_id=notification_id)
        return Response(NotificationOutputSerializer(notification).data)


class PusherAuthInputSerializer(serializers.Serializer):
    # Pusher's socket ids look like "1234.5678"; the client library refuses anything else.
    socket_id = serializers.RegexField(r"^\d+\.\d+\Z", max_length=64)
    channel_name = serializers.CharField(max_length=164)


class PusherAuthOutputSerializer(serializers.Serializer):
    auth = serializers.CharField()


class PusherAuthApi(APIView):
    # pusher-js posts a form; other clients may send JSON.
    parser_classes = [FormParser, JSONParser]

    @extend_schema(
        request=PusherAuthInputSerializer,
        responses={
            200: PusherAuthOutputSerializer,
            503: OpenApiResponse(ErrorSerializer, "pusher_not_configured"),
        },
    )
    def post(self, request):
        data = PusherAuthInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(pusher_channel_authorize(user=request.user, **data.validated_data))
