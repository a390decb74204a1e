"""Provides `manage.py demo_setup`: the demo tenant, a fresh key and (DEBUG only) an admin user,
as `make run` prints them."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from tenants.selectors import tenant_get
from tenants.services import api_key_issue, tenant_create

DEMO_SLUG = "demo"
DEMO_ADMIN = ("admin", "admin")
EXAMPLE_BODY = '{"topic": "orders.created", "data": {"id": 1}}'


class Command(BaseCommand):
    help = "Creates the demo tenant if missing and issues it a new key, shown once."

    def add_arguments(self, parser):
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")

    def handle(self, *args, base_url, **options):
        tenant = tenant_get(slug=DEMO_SLUG) or tenant_create(slug=DEMO_SLUG, name="Demo")
        issued = api_key_issue(tenant=tenant, name="make run")
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
            username, password = DEMO_ADMIN
            if not user_model.objects.filter(username=username).exists():
                user_model.objects.create_superuser(username, "admin@example.com", password)
            lines += ["", f"Dashboard: {base_url}/dashboard/  (login {username} / {password})"]
        lines += [f"API docs:  {base_url}/api/docs/", ""]
        self.stdout.write("\n".join(lines))
