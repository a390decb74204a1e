"""The tenant management commands: create_tenant, create_api_key and revoke_api_key."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tenants import selectors
from tenants.keys import key_hash
from tenants.models import ApiKey, Tenant
from tenants.services import api_key_issue
from tests.factories import ACTOR

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


# create_tenant ------------------------------------------------------------------------------


def test_it_creates_a_tenant_with_unlimited_connections_and_rate_by_default():
    output = run("create_tenant", "acme")
    tenant = Tenant.objects.get(slug="acme")
    assert "acme" in output
    assert tenant.is_active
    assert tenant.max_connections is None
    assert tenant.publish_rate is None


def test_it_creates_a_tenant_with_a_name_and_limits():
    run("create_tenant", "acme", "--name", "Acme Inc", "--max-connections", "5")
    run("create_tenant", "beta", "--publish-rate=20")
    acme, beta = Tenant.objects.get(slug="acme"), Tenant.objects.get(slug="beta")
    assert (acme.name, acme.max_connections, acme.publish_rate) == ("Acme Inc", 5, None)
    assert (beta.max_connections, beta.publish_rate) == (None, 20)


@pytest.mark.parametrize(
    "slug",
    ["Acme", "-acme", "acme_corp", "acme corp", "a" * 64, "acmé", ""],
)
def test_it_rejects_a_malformed_slug_with_a_command_error(slug):
    with pytest.raises(CommandError, match="slug"):
        run("create_tenant", slug)
    assert not Tenant.objects.exists()


@pytest.mark.parametrize("slug", ["a", "0", "acme-2", "a" * 63])
def test_it_accepts_every_slug_the_contract_allows(slug):
    run("create_tenant", slug)
    assert Tenant.objects.filter(slug=slug).exists()


def test_it_rejects_a_slug_that_is_taken():
    run("create_tenant", "acme")
    with pytest.raises(CommandError, match="slug"):
        run("create_tenant", "acme")
    assert Tenant.objects.count() == 1


@pytest.mark.parametrize(
    "option", ["--max-connections=0", "--max-connections=-1", "--publish-rate=0"]
)
def test_it_rejects_a_limit_that_is_not_positive(option):
    with pytest.raises(CommandError, match=option.split("=")[0]):
        run("create_tenant", "acme", option)
    assert not Tenant.objects.exists()


# create_api_key -----------------------------------------------------------------------------


@pytest.fixture
def acme(db):
    run("create_tenant", "acme")
    return Tenant.objects.get(slug="acme")


def test_it_prints_the_new_key_alone_on_the_last_line(acme):
    output = run("create_api_key", "acme", "--name", "ci")
    last_line = output.rstrip("\n").splitlines()[-1]
    assert last_line.startswith("ehk_")
    assert last_line == last_line.strip()
    assert " " not in last_line
    principal = selectors.api_key_principal(raw_key=last_line)
    assert principal is not None
    assert principal.tenant_id == acme.pk
    assert principal.usable


def test_it_stores_only_the_hash_of_the_key(acme):
    secret = run("create_api_key", "acme").splitlines()[-1]
    (row,) = ApiKey.objects.values()
    assert row["hashed_secret"] == key_hash(secret)
    for value in row.values():
        assert secret not in str(value)
    # Nor any meaningful part of it beyond the visible prefix.
    random_part = secret.split("_", 2)[2]  # ehk_<prefix>_<random>
    assert not any(random_part[:16] in str(value) for value in row.values())


def test_it_gives_a_new_key_every_scope_by_default(acme):
    secret = run("create_api_key", "acme").splitlines()[-1]
    principal = selectors.api_key_principal(raw_key=secret)
    assert principal.scopes == {"publish", "subscribe", "history", "webhooks"}


def test_it_gives_a_new_key_only_the_scopes_asked_for(acme):
    secret = run("create_api_key", "acme", "--scopes", "publish, history").splitlines()[-1]
    principal = selectors.api_key_principal(raw_key=secret)
    assert principal.scopes == {"publish", "history"}


@pytest.mark.parametrize("scopes", ["publish,admin", "", ","])
def test_it_refuses_unknown_or_empty_scopes(acme, scopes):
    with pytest.raises(CommandError, match="Scopes"):
        run("create_api_key", "acme", "--scopes", scopes)
    assert not ApiKey.objects.exists()


def test_it_refuses_a_key_for_a_tenant_that_does_not_exist(db):
    with pytest.raises(CommandError, match="nope"):
        run("create_api_key", "nope")


def test_two_keys_of_a_tenant_differ(acme):
    first = run("create_api_key", "acme").splitlines()[-1]
    second = run("create_api_key", "acme").splitlines()[-1]
    assert first != second
    assert ApiKey.objects.filter(tenant=acme).count() == 2


# revoke_api_key -----------------------------------------------------------------------------


@pytest.fixture
def two_keys(tenant):
    return api_key_issue(actor=ACTOR, tenant=tenant), api_key_issue(actor=ACTOR, tenant=tenant)


def _revoked(issued) -> bool:
    return ApiKey.objects.get(pk=issued.api_key.pk).revoked_at is not None


@pytest.mark.parametrize(
    "how",
    [
        pytest.param(lambda issued: issued.api_key.prefix, id="by-prefix"),
        pytest.param(lambda issued: f"ehk_{issued.api_key.prefix}", id="by-prefix-with-ehk"),
        pytest.param(lambda issued: issued.secret, id="by-whole-key"),
    ],
)
def test_it_revokes_one_key_and_leaves_the_others(two_keys, how):
    target, other = two_keys
    output = run("revoke_api_key", how(target))
    assert target.api_key.prefix in output
    assert _revoked(target)
    assert not _revoked(other)
    assert selectors.api_key_principal(raw_key=target.secret).revoked
    assert selectors.api_key_principal(raw_key=other.secret).usable


def test_a_revoked_key_stops_working_at_once_even_if_it_was_cached(two_keys):
    target, _ = two_keys
    assert selectors.api_key_principal(raw_key=target.secret).usable  # now cached
    run("revoke_api_key", target.api_key.prefix)
    assert selectors.api_key_principal(raw_key=target.secret).revoked


def test_revoking_a_revoked_key_again_keeps_its_revocation_time(two_keys):
    target, _ = two_keys
    run("revoke_api_key", target.secret)
    first = ApiKey.objects.get(pk=target.api_key.pk).revoked_at
    run("revoke_api_key", target.secret)
    assert ApiKey.objects.get(pk=target.api_key.pk).revoked_at == first


@pytest.mark.parametrize("key", ["deadbeef", "ehk_deadbeef_" + "x" * 43])
def test_it_reports_a_key_it_does_not_know(two_keys, key):
    with pytest.raises(CommandError, match="No such API key"):
        run("revoke_api_key", key)
    assert not ApiKey.objects.filter(revoked_at__isnull=False).exists()
