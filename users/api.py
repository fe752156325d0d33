"""Sign-up, tokens and passwords. Every endpoint here is throttled per client address and per
username (``THROTTLE_AUTH``), so passwords cannot be guessed at speed."""

from django.contrib.auth import authenticate
from django.core.validators import RegexValidator
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import AUTH_THROTTLES, ErrorSerializer, StrictCharField
from core.errors import DomainError
from users.services import (
    password_change,
    token_create,
    token_revoke,
    tokens_revoke_all,
    user_create,
)


class UsernameField(StrictCharField):
    default_validators = [RegexValidator(r"^[\w.@+-]+\Z", "Letters, digits and @/./+/-/_ only.")]


class CredentialsSerializer(serializers.Serializer):
    username = UsernameField(max_length=150)
    password = StrictCharField(max_length=128, trim_whitespace=False)


class UserOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()


class TokenOutputSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Send it as `Authorization: Token <token>`.")
    expiry = serializers.DateTimeField(help_text="After this moment the token stops working.")


class RegisterApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = AUTH_THROTTLES

    @extend_schema(
        request=CredentialsSerializer,
        responses={
            201: UserOutputSerializer,
            409: OpenApiResponse(ErrorSerializer, "username_taken"),
        },
    )
    def post(self, request):
        data = CredentialsSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = user_create(**data.validated_data)
        return Response(UserOutputSerializer(user).data, status=status.HTTP_201_CREATED)


class InvalidCredentials(DomainError):
    code = "invalid_credentials"
    status = 400
    default_detail = "Unknown username or wrong password."


class TokenApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = AUTH_THROTTLES

    @extend_schema(request=CredentialsSerializer, responses={200: TokenOutputSerializer})
    def post(self, request):
        data = CredentialsSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(request, **data.validated_data)
        if user is None:
            raise InvalidCredentials()
        token, expiry = token_create(user=user)
        return Response({"token": token, "expiry": expiry})


class LogoutApi(APIView):
    """Revoke the token this request was made with."""

    @extend_schema(request=None, responses={204: None})
    def post(self, request):
        if request.auth is not None:
            token_revoke(token=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)


class LogoutAllApi(APIView):
    """Revoke every token of the caller."""

    @extend_schema(request=None, responses={204: None})
    def post(self, request):
        tokens_revoke_all(user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class PasswordChangeInputSerializer(serializers.Serializer):
    old_password = StrictCharField(max_length=128, trim_whitespace=False)
    new_password = StrictCharField(max_length=128, trim_whitespace=False)


class PasswordChangeApi(APIView):
    """Change the caller's password; every token of theirs stops working (get a new one)."""

    throttle_classes = AUTH_THROTTLES

    @extend_schema(request=PasswordChangeInputSerializer, responses={204: None})
    def post(self, request):
        data = PasswordChangeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        password_change(user=request.user, **data.validated_data)
        return Response(status=status.HTTP_204_NO_CONTENT)
