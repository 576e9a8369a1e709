"""Print a new API token for a user; the token alone is the last line, for scripts."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from jobs.tokens import api_token_create


class Command(BaseCommand):
    help = "Create an API token for USERNAME and print it (shown only once)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--create-user", action="store_true", help="create the user if missing")
        parser.add_argument("--name", default="cli", help="a label for the token")

    def handle(
        self, *args: Any, username: str, create_user: bool, name: str, **options: Any
    ) -> None:
        users = get_user_model()
        user = users.objects.filter(username=username).first()
        if user is None:
            if not create_user:
                raise CommandError(f"no user {username!r} (pass --create-user to create it)")
            user = users.objects.create_user(username=username)
            self.stderr.write(
                f"created user {username!r} (no password: set one with changepassword)"
            )
        _, raw = api_token_create(user=user, name=name)
        self.stdout.write(raw)
