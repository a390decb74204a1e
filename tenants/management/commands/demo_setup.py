"""Provides `manage.py demo_setup`: the demo tenant, a fresh key and (DEBUG only) an admin user
with a random password, as `make run` prints them."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from tenants.actors import Actor
from tenants.demo import DEMO_USERNAME
from tenants.selectors import tenant_get
from tenants.services import api_key_issue, tenant_create

DEMO_SLUG = "demo"
EXAMPLE_BODY = '{"topic": "orders.created", "data": {"id": 1}}'


class Command(BaseCommand):
    help = "Creates the demo tenant if missing and issues it a new key, shown once."

    def add_arguments(self, parser):
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")

    def handle(self, *args, base_url, **options):
        actor = Actor.command("manage.py demo_setup")
        tenant = tenant_get(slug=DEMO_SLUG)
        if tenant is None:
            tenant = tenant_create(actor=actor, slug=DEMO_SLUG, name="Demo")
        issued = api_key_issue(actor=actor, tenant=tenant, name="make run")
        lines = [
            "",
            f"Demo tenant '{tenant.slug}'. New API key (shown once; publish, subscribe, history):",
            f"  {issued.secret}",
            "",
            "Publish:",
            f"  curl -X POST {base_url}/api/v1/events \\",
            f"       -H 'Authorization: Bearer {issued.secret}' \\",
            "       -H 'Content-Type: application/json' \\",
            f"       -d '{EXAMPLE_BODY}'",
            "Subscribe:",
            f"  curl -N {base_url}/sse/v1/events -H 'Authorization: Bearer {issued.secret}'",
        ]
        if settings.DEBUG and settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
            user_model = get_user_model()
            if not user_model.objects.filter(username=DEMO_USERNAME).exists():
                # Random, shown once: the same db.sqlite3 may be served with DEBUG off later.
                password = secrets.token_urlsafe(12)
                user_model.objects.create_superuser(DEMO_USERNAME, "admin@example.com", password)
                login = f"login {DEMO_USERNAME} / {password}, shown once"
            else:
                login = f"login {DEMO_USERNAME} with the password printed when it was made"
            lines += ["", f"Dashboard: {base_url}/dashboard/  ({login})"]
        lines += [f"API docs:  {base_url}/api/docs/", ""]
        self.stdout.write("\n".join(lines))
