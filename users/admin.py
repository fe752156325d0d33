"""Users in the admin: Django's own user admin, without a count of every user on each page."""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from core.admin import LargeTableAdminMixin

User = get_user_model()

admin.site.unregister(User)


@admin.register(User)
class UserAdmin(LargeTableAdminMixin, DjangoUserAdmin):
    pass
