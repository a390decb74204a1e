"""Provides `manage.py reseal_webhook_secrets`."""

from django.core.management.base import BaseCommand, CommandError

from webhooks.services import webhook_secrets_reseal


class Command(BaseCommand):
    help = (
        "Seals every webhook endpoint's secret under the current SECRET_KEY. Run it after a "
        "rotation that moved the old key to SECRET_KEY_FALLBACKS, before dropping that key."
    )

    def handle(self, *args, **options):
        unreadable = webhook_secrets_reseal()
        if unreadable:
            ids = ", ".join(str(pk) for pk in unreadable)
            raise CommandError(
                f"Sealed under none of SECRET_KEY and SECRET_KEY_FALLBACKS: endpoints {ids}. "
                'Rotate their secrets in the admin (Webhook endpoints, "Rotate the secret").'
            )
        self.stdout.write("Every webhook secret is sealed under the current SECRET_KEY.")
