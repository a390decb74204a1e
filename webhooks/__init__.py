"""Provides webhooks: HTTP POSTs of a tenant's events and presence changes to its endpoints."""
