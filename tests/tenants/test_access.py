"""The one rule of what makes an API key usable, which every door (REST, WebSocket, SSE, the
hub's re-checks) asks."""

from dataclasses import replace
from datetime import timedelta

import pytest
from django.utils import timezone

from tenants.access import Refused, principal_denial
from tenants.selectors import Principal

GOOD = Principal(
    key_id=1,
    prefix="ehk_x",
    tenant_id=1,
    tenant_slug="acme",
    tenant_active=True,
    scopes=frozenset({"publish", "subscribe"}),
    expires_at=None,
    revoked=False,
    max_connections=None,
    publish_rate=None,
)


def test_a_known_live_key_of_an_active_tenant_with_the_scope_may_be_used():
    assert principal_denial(GOOD, "subscribe") is None
    assert principal_denial(GOOD) is None


@pytest.mark.parametrize(
    ("principal", "scope", "kind", "detail"),
    [
        (None, None, Refused.UNAUTHENTICATED, "Unknown API key."),
        (
            replace(GOOD, revoked=True),
            None,
            Refused.UNAUTHENTICATED,
            "This API key has been revoked.",
        ),
        (
            replace(GOOD, expires_at=timezone.now() - timedelta(seconds=1)),
            None,
            Refused.UNAUTHENTICATED,
            "This API key has expired.",
        ),
        (replace(GOOD, tenant_active=False), None, Refused.FORBIDDEN, "This tenant is suspended."),
        (
            replace(GOOD, scopes=frozenset({"publish"})),
            "subscribe",
            Refused.FORBIDDEN,
            "This API key lacks the 'subscribe' scope.",
        ),
    ],
)
def test_a_key_that_breaks_a_rule_is_refused_with_its_reason(principal, scope, kind, detail):
    denial = principal_denial(principal, scope)

    assert denial is not None
    assert (denial.kind, denial.detail) == (kind, detail)


def test_the_key_itself_is_judged_before_its_tenant_and_scope():
    worst = replace(GOOD, revoked=True, tenant_active=False, scopes=frozenset())

    assert principal_denial(worst, "subscribe").kind is Refused.UNAUTHENTICATED
