"""``manage.py track_event NAME``: what a cron job's command does, tracked outside a request."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

import sqreen


class Command(BaseCommand):  # type: ignore[misc]
    help = "Track one event, as a management command of an app would."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(str(sqreen.track(options["name"], {"properties": {"via": "command"}})))
