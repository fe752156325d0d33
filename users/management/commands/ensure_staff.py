import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from users.services import user_create


class Command(BaseCommand):
    help = (
        "Create or update a staff superuser (with a wallet); the password is read from the "
        "ADMIN_PASSWORD environment variable so it never appears in a process list."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", required=True)

    def handle(self, *args, username: str, **options):
        password = os.environ.get("ADMIN_PASSWORD")
        if not password:
            raise CommandError("set ADMIN_PASSWORD")
        user_model = get_user_model()
        with transaction.atomic():
            user = user_model.objects.select_for_update().filter(username=username).first()
            if user is None:
                user_create(username=username, password=password, is_superuser=True, validate=False)
                self.stdout.write(f"created staff user {username}")
                return
            user.is_staff = user.is_superuser = user.is_active = True
            user.set_password(password)
            user.save(update_fields=["is_staff", "is_superuser", "is_active", "password"])
        self.stdout.write(f"updated staff user {username}")
