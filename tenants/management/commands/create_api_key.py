"""Provides `manage.py create_api_key SLUG`; the key is printed alone on the last line."""

from django.core.management.base import BaseCommand, CommandError

from tenants.actors import Actor
from tenants.models import SCOPES
from tenants.selectors import tenant_get
from tenants.services import api_key_issue


class Command(BaseCommand):
    help = "Issues an API key for a tenant and prints it once; only its hash is stored."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", default="")
        parser.add_argument("--scopes", default=",".join(SCOPES), help="comma-separated")

    def handle(self, *args, slug, name, scopes, **options):
        tenant = tenant_get(slug=slug)
        if tenant is None:
            raise CommandError(f"No tenant '{slug}'.")
        wanted = [s.strip() for s in scopes.split(",") if s.strip()]
        unknown = sorted(set(wanted) - set(SCOPES))
        if unknown or not wanted:
            raise CommandError(f"Scopes must be among {', '.join(SCOPES)}; got {scopes!r}.")
        issued = api_key_issue(
            actor=Actor.command("manage.py create_api_key"),
            tenant=tenant,
            name=name,
            scopes=wanted,
        )
        self.stdout.write(
            f"API key {issued.api_key.prefix} for {tenant.slug}, scopes "
            f"{','.join(issued.api_key.scopes)}. It is shown once; store it now:"
        )
        self.stdout.write(issued.secret)
