"""The audit trail: every key issue, change and revocation, every tenant creation, suspension,
resumption and change is recorded with who, what, when and from where, through the admin and
the management commands alike, and the admin shows it read-only (security issue 10)."""

import getpass
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import Client, RequestFactory
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.request import Request

from tenants import services
from tenants.actors import Actor
from tenants.authentication import ApiKeyAuthentication
from tenants.models import ApiKey, AuditEntry, Tenant
from tests.factories import ACTOR

pytestmark = [
    pytest.mark.django_db,
    # The test client builds a handler of its own; Django warns that `collectstatic` has not run.
    pytest.mark.filterwarnings("ignore:No directory at"),
]

ADDRESS = "203.0.113.7"
NO_EXPIRY = {"expires_at_0": "", "expires_at_1": ""}


def client_of(user) -> Client:
    client = Client(REMOTE_ADDR=ADDRESS)
    client.force_login(user)
    return client


@pytest.fixture
def root():
    return get_user_model().objects.create_superuser("root", password="pw")


@pytest.fixture
def admin(root):
    """A superuser's admin client, its requests from ADDRESS."""
    return client_of(root)


def staff_with(*codenames: str):
    user = get_user_model().objects.create_user("operator", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


def run_action(client, model: str, action: str, *pks: int):
    return client.post(
        f"/admin/tenants/{model}/", {"action": action, "_selected_action": [str(pk) for pk in pks]}
    )


def tenant_form(tenant: Tenant, **fields) -> dict:
    form = {
        "slug": tenant.slug,
        "name": tenant.name,
        "is_active": "on" if tenant.is_active else "",
        "max_connections": tenant.max_connections or "",
        "publish_rate": tenant.publish_rate or "",
        "members": [user.pk for user in tenant.members.all()],
        **fields,
    }
    return {name: value for name, value in form.items() if value != ""}


def entries(**filters) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(**filters).order_by("pk"))


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


# The admin ------------------------------------------------------------------------------------


def test_a_key_issued_in_the_admin_records_the_user_the_address_and_its_scopes(admin, tenant):
    before = timezone.now()
    response = admin.post(
        "/admin/tenants/apikey/add/",
        {"tenant": tenant.pk, "name": "billing", "scopes": ["publish", "subscribe"], **NO_EXPIRY},
    )

    assert response.status_code == 200
    key = ApiKey.objects.get(tenant=tenant, name="billing")
    (entry,) = entries(action="api_key.issue")
    assert (entry.actor_kind, entry.actor_name, entry.actor_address) == ("admin", "root", ADDRESS)
    assert (entry.tenant, entry.tenant_slug, entry.target) == (tenant, tenant.slug, key.prefix)
    assert entry.changes == {
        "name": [None, "billing"],
        "scopes": [None, ["publish", "subscribe"]],
        "expires_at": [None, None],
    }
    assert before <= entry.at <= timezone.now()


def test_a_scope_change_in_the_admin_records_the_scopes_before_and_after(admin, tenant):
    issued = services.api_key_issue(actor=ACTOR, tenant=tenant, name="app")

    response = admin.post(
        f"/admin/tenants/apikey/{issued.api_key.pk}/change/",
        {"name": "app", "scopes": ["subscribe"], **NO_EXPIRY},
    )

    assert response.status_code == 302, response.content
    (entry,) = entries(action="api_key.update")
    assert (entry.actor_name, entry.actor_address, entry.target) == (
        "root",
        ADDRESS,
        issued.api_key.prefix,
    )
    assert entry.changes == {
        "scopes": [["history", "publish", "subscribe", "webhooks"], ["subscribe"]]
    }


def test_an_expiry_set_in_the_admin_is_recorded_with_the_new_time(admin, tenant):
    issued = services.api_key_issue(actor=ACTOR, tenant=tenant, name="app")

    admin.post(
        f"/admin/tenants/apikey/{issued.api_key.pk}/change/",
        {
            "name": "app",
            "scopes": ["publish", "subscribe", "history"],
            "expires_at_0": "2031-01-02",
            "expires_at_1": "03:04:05",
        },
    )

    (entry,) = entries(action="api_key.update")
    before, after = entry.changes["expires_at"]
    assert before is None
    assert after.startswith("2031-01-02T03:04:05")


def test_a_key_change_form_saved_unchanged_records_nothing(admin, tenant):
    issued = services.api_key_issue(actor=ACTOR, tenant=tenant, name="app")

    response = admin.post(
        f"/admin/tenants/apikey/{issued.api_key.pk}/change/",
        {"name": "app", "scopes": ["history", "publish", "subscribe", "webhooks"], **NO_EXPIRY},
    )

    assert response.status_code == 302, response.content
    assert entries(action="api_key.update") == []


def test_revoking_keys_in_the_admin_records_each_revocation_once(admin, tenant):
    first = services.api_key_issue(actor=ACTOR, tenant=tenant)
    second = services.api_key_issue(actor=ACTOR, tenant=tenant)

    run_action(admin, "apikey", "revoke", first.api_key.pk, second.api_key.pk)
    run_action(admin, "apikey", "revoke", first.api_key.pk)  # revoked already: nothing to record

    revoked = entries(action="api_key.revoke")
    assert sorted(entry.target for entry in revoked) == sorted(
        [first.api_key.prefix, second.api_key.prefix]
    )
    assert {(e.actor_name, e.actor_address, e.tenant_slug) for e in revoked} == {
        ("root", ADDRESS, tenant.slug)
    }
    revoked_at = ApiKey.objects.get(pk=first.api_key.pk).revoked_at
    (change,) = [e.changes["revoked_at"] for e in revoked if e.target == first.api_key.prefix]
    assert change[0] is None
    assert abs(parse_datetime(change[1]) - revoked_at) < timedelta(milliseconds=1)


def test_deleting_a_key_in_the_admin_is_recorded_on_its_page_and_in_bulk(admin, tenant):
    one = services.api_key_issue(actor=ACTOR, tenant=tenant)
    two = services.api_key_issue(actor=ACTOR, tenant=tenant)
    three = services.api_key_issue(actor=ACTOR, tenant=tenant)

    admin.post(f"/admin/tenants/apikey/{one.api_key.pk}/delete/", {"post": "yes"})
    run_action(admin, "apikey", "delete_selected", two.api_key.pk, three.api_key.pk)
    # Django's bulk delete asks first, then deletes on the confirmation.
    admin.post(
        "/admin/tenants/apikey/",
        {
            "action": "delete_selected",
            "post": "yes",
            "_selected_action": [str(two.api_key.pk), str(three.api_key.pk)],
        },
    )

    assert not ApiKey.objects.exists()
    deleted = entries(action="api_key.delete")
    assert sorted(e.target for e in deleted) == sorted(k.api_key.prefix for k in (one, two, three))
    assert {(e.actor_name, e.tenant_slug) for e in deleted} == {("root", tenant.slug)}


def test_deleting_a_tenant_in_the_admin_is_recorded_and_keeps_its_earlier_entries(admin, tenant):
    services.api_key_issue(actor=ACTOR, tenant=tenant)

    admin.post(f"/admin/tenants/tenant/{tenant.pk}/delete/", {"post": "yes"})

    assert not Tenant.objects.filter(pk=tenant.pk).exists()
    (deleted,) = entries(action="tenant.delete")
    assert (deleted.target, deleted.tenant_slug, deleted.actor_name) == (
        tenant.slug,
        tenant.slug,
        "root",
    )
    assert deleted.changes == {"keys": [1, None]}
    assert entries(action="api_key.issue")[0].tenant_slug == tenant.slug


def test_a_staff_user_suspending_and_resuming_tenants_is_recorded_each_time(tenant, other_tenant):
    client = client_of(staff_with("view_tenant", "change_tenant"))

    run_action(client, "tenant", "suspend", tenant.pk, other_tenant.pk)
    run_action(client, "tenant", "suspend", tenant.pk)  # suspended already: nothing to record
    run_action(client, "tenant", "resume", tenant.pk)

    recorded = [(e.action, e.tenant_slug, e.changes) for e in entries()]
    assert sorted(recorded[:2]) == sorted(
        [
            ("tenant.suspend", tenant.slug, {"is_active": [True, False]}),
            ("tenant.suspend", other_tenant.slug, {"is_active": [True, False]}),
        ]
    )
    assert recorded[2:] == [("tenant.resume", tenant.slug, {"is_active": [False, True]})]
    assert {(e.actor_kind, e.actor_name, e.actor_address) for e in entries()} == {
        ("admin", "operator", ADDRESS)
    }


def test_a_limit_changed_in_the_tenant_form_records_its_old_and_new_value(admin, tenant):
    response = admin.post(
        f"/admin/tenants/tenant/{tenant.pk}/change/",
        tenant_form(tenant, max_connections=5, publish_rate=100),
    )

    assert response.status_code == 302, response.content
    (entry,) = entries()
    assert (entry.action, entry.actor_name, entry.actor_address) == (
        "tenant.update",
        "root",
        ADDRESS,
    )
    assert entry.changes == {"max_connections": [None, 5], "publish_rate": [None, 100]}


def test_a_tenant_suspended_in_its_change_form_is_recorded_as_a_suspension(admin, tenant):
    admin.post(
        f"/admin/tenants/tenant/{tenant.pk}/change/",
        tenant_form(tenant, is_active="", name="Renamed"),
    )

    recorded = {e.action: e.changes for e in entries()}
    assert recorded == {
        "tenant.suspend": {"is_active": [True, False]},
        "tenant.update": {"name": [tenant.name, "Renamed"]},
    }


def test_a_members_change_in_the_tenant_form_is_recorded_by_username(admin, root, tenant):
    viewer = get_user_model().objects.create_user("viewer", password="pw")

    admin.post(
        f"/admin/tenants/tenant/{tenant.pk}/change/",
        tenant_form(tenant, members=[viewer.pk, root.pk]),
    )

    (entry,) = entries()
    assert entry.changes == {"members": [[], ["root", "viewer"]]}
    assert set(Tenant.objects.get(pk=tenant.pk).members.all()) == {viewer, root}


def test_a_tenant_change_form_saved_unchanged_records_nothing(admin, tenant):
    response = admin.post(f"/admin/tenants/tenant/{tenant.pk}/change/", tenant_form(tenant))

    assert response.status_code == 302, response.content
    assert entries() == []


def test_a_tenant_added_in_the_admin_is_recorded_with_its_limits_and_members(admin, root):
    response = admin.post(
        "/admin/tenants/tenant/add/",
        {
            "slug": "acme",
            "name": "Acme",
            "is_active": "on",
            "max_connections": 5,
            "members": [root.pk],
        },
    )

    assert response.status_code == 302, response.content
    acme = Tenant.objects.get(slug="acme")
    assert list(acme.members.all()) == [root]
    (entry,) = entries()
    assert (entry.action, entry.tenant, entry.actor_name) == ("tenant.create", acme, "root")
    assert entry.changes == {
        "slug": [None, "acme"],
        "name": [None, "Acme"],
        "max_connections": [None, 5],
        "publish_rate": [None, None],
        "is_active": [None, True],
        "members": [None, ["root"]],
    }


# The management commands ----------------------------------------------------------------------


def command_actor(name: str) -> str:
    return f"manage.py {name} (user {getpass.getuser()})"


def test_each_management_command_records_its_name_and_the_os_user():
    run("create_tenant", "acme", "--max-connections", "3")
    key_output = run("create_api_key", "acme", "--scopes", "publish")
    prefix = ApiKey.objects.get(tenant__slug="acme").prefix
    run("revoke_api_key", key_output.splitlines()[-1])

    recorded = [(e.action, e.actor_kind, e.actor_name, e.actor_address) for e in entries()]
    assert recorded == [
        ("tenant.create", "command", command_actor("create_tenant"), None),
        ("api_key.issue", "command", command_actor("create_api_key"), None),
        ("api_key.revoke", "command", command_actor("revoke_api_key"), None),
    ]
    create, issue, revoke = entries()
    assert create.changes["max_connections"] == [None, 3]
    assert (issue.target, issue.changes["scopes"]) == (prefix, [None, ["publish"]])
    assert (revoke.target, revoke.tenant_slug) == (prefix, "acme")


def test_demo_setup_records_the_demo_tenant_once_and_each_key_it_issues():
    run("demo_setup")
    run("demo_setup")

    recorded = [(e.action, e.tenant_slug, e.actor_name) for e in entries()]
    assert recorded == [
        ("tenant.create", "demo", command_actor("demo_setup")),
        ("api_key.issue", "demo", command_actor("demo_setup")),
        ("api_key.issue", "demo", command_actor("demo_setup")),
    ]


def test_revoking_a_revoked_key_from_the_command_line_records_nothing_more(tenant):
    issued = services.api_key_issue(actor=ACTOR, tenant=tenant)

    run("revoke_api_key", issued.api_key.prefix)
    run("revoke_api_key", issued.api_key.prefix)

    assert len(entries(action="api_key.revoke")) == 1


def test_a_command_run_by_a_user_the_os_cannot_name_is_recorded_by_its_name(monkeypatch):
    def no_user():
        raise OSError("No username set in the environment")

    monkeypatch.setattr(getpass, "getuser", no_user)

    assert Actor.command("manage.py create_tenant") == Actor(
        kind="command", name="manage.py create_tenant"
    )


# Actors of requests and the service -----------------------------------------------------------


def test_a_request_made_with_an_api_key_is_attributed_to_the_keys_prefix(tenant):
    issued = services.api_key_issue(actor=ACTOR, tenant=tenant)
    django_request = RequestFactory().post(
        "/api/v1/tokens/revoke", HTTP_AUTHORIZATION=f"Bearer {issued.secret}", REMOTE_ADDR=ADDRESS
    )
    request = Request(django_request, authenticators=[ApiKeyAuthentication()])

    assert Actor.from_request(request) == Actor(
        kind="api_key", name=issued.api_key.prefix, address=ADDRESS
    )


def test_a_forwarded_for_header_does_not_change_the_recorded_address(root):
    request = RequestFactory().get(
        "/admin/", REMOTE_ADDR=ADDRESS, HTTP_X_FORWARDED_FOR="198.51.100.1"
    )
    request.user = root

    assert Actor.from_request(request) == Actor(kind="admin", name="root", address=ADDRESS)


def test_a_token_revocation_is_recorded_by_the_tenants_id(tenant):
    actor = Actor(kind="api_key", name="abcd1234", address=ADDRESS)

    entry = services.audit_record(
        actor=actor, action="token.revoke", tenant_id=tenant.pk, target="token-1"
    )

    assert (entry.tenant, entry.tenant_slug, entry.target) == (tenant, tenant.slug, "token-1")
    with pytest.raises(TypeError):
        services.audit_record(actor=actor, action="token.revoke", tenant=tenant, tenant_id=1)
    with pytest.raises(TypeError):
        services.audit_record(actor=actor, action="token.revoke")


def test_an_entry_outlives_its_deleted_tenant(tenant):
    services.tenant_set_active(actor=ACTOR, tenant=tenant, active=False)
    slug = tenant.slug

    tenant.delete()

    (entry,) = entries()
    assert (entry.tenant, entry.tenant_slug, entry.action) == (None, slug, "tenant.suspend")


def test_a_revocation_that_cannot_be_recorded_is_not_made(tenant, monkeypatch):
    issued = services.api_key_issue(actor=ACTOR, tenant=tenant)

    def broken(**fields):
        raise RuntimeError("the audit table is gone")

    monkeypatch.setattr(AuditEntry.objects, "create", broken)
    with pytest.raises(RuntimeError):
        services.api_key_revoke(actor=ACTOR, api_key=issued.api_key)

    assert ApiKey.objects.get(pk=issued.api_key.pk).revoked_at is None


# The trail in the admin, read-only ------------------------------------------------------------


@pytest.fixture
def entry(tenant):
    when = timezone.now() + timedelta(days=1)
    services.api_key_issue(actor=ACTOR, tenant=tenant, name="app", expires_at=when)
    return AuditEntry.objects.get()


def test_the_trail_lists_and_shows_entries_to_a_superuser(admin, entry):
    listed = admin.get("/admin/tenants/auditentry/")
    searched = admin.get("/admin/tenants/auditentry/", {"q": entry.target})
    filtered = admin.get("/admin/tenants/auditentry/", {"action__exact": "api_key.issue"})
    shown = admin.get(f"/admin/tenants/auditentry/{entry.pk}/change/")

    assert listed.status_code == searched.status_code == filtered.status_code == 200
    assert entry.target in listed.content.decode()
    assert f"management command: {entry.actor_name}" in listed.content.decode()
    assert entry.target in searched.content.decode()
    assert shown.status_code == 200
    page = shown.content.decode()
    assert entry.target in page
    assert 'name="_save"' not in page  # read-only: no save button
    assert "/delete/" not in page


def test_the_trail_refuses_to_add_change_or_delete_entries(admin, entry):
    url = f"/admin/tenants/auditentry/{entry.pk}"

    added = admin.post("/admin/tenants/auditentry/add/", {"action": "tenant.create"})
    changed = admin.post(f"{url}/change/", {"target": "forged", "actor_name": "nobody"})
    deleted = admin.post(f"{url}/delete/", {"post": "yes"})
    bulk = run_action(admin, "auditentry", "delete_selected", entry.pk)

    assert (added.status_code, changed.status_code, deleted.status_code) == (403, 403, 403)
    assert bulk.status_code in (200, 302)  # Django: "No action selected", nothing deleted
    assert AuditEntry.objects.get(pk=entry.pk).target == entry.target
    assert AuditEntry.objects.count() == 1


def test_only_users_allowed_to_view_the_trail_see_it(entry):
    plain_staff = client_of(staff_with("view_tenant"))
    assert plain_staff.get("/admin/tenants/auditentry/").status_code == 403

    get_user_model().objects.filter(username="operator").delete()
    auditor = client_of(staff_with("view_auditentry"))
    assert auditor.get("/admin/tenants/auditentry/").status_code == 200
    assert auditor.get(f"/admin/tenants/auditentry/{entry.pk}/change/").status_code == 200
