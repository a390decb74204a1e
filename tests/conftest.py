"""Provides the shared fixtures: tenants, keys, API clients and a clean hub per test."""

import httpx
import pytest
from channels.layers import channel_layers

from eventhub.asgi import application
from streams import metrics, runtime
from streams.backends.local import LocalBackend
from streams.delivery.replay import log_reads
from streams.revoked_tokens import revoked_tokens
from tenants import selectors
from tenants.services import api_key_issue
from tests.factories import ACTOR, TenantFactory

SETTLE_SECONDS = 10.0  # the longest a test's last database work may take to end


@pytest.fixture(autouse=True)
def fresh_process_state():
    """Each test starts like a new process: no hub, no sequences, no cached keys or layers."""
    runtime.reset()
    channel_layers.backends.clear()
    selectors.api_key_cache_clear()
    revoked_tokens.clear()
    metrics.tenant_counters.clear()
    yield
    # The test's event loop is gone, but a database thread of its engine may still be writing
    # or reading (a batch handed to it as the test ended): the database flush after the test
    # would find its tables locked (SQLite's shared cache does not wait).
    backend = runtime.peek_backend()
    if isinstance(backend, LocalBackend):
        backend.log_queue.wait_idle(SETTLE_SECONDS)
    log_reads.wait_idle(SETTLE_SECONDS)
    runtime.reset()
    channel_layers.backends.clear()


@pytest.fixture
def tenant(db):
    return TenantFactory()


@pytest.fixture
def other_tenant(db):
    return TenantFactory()


@pytest.fixture
def api_key(tenant):
    """The whole secret of a key of `tenant` with every scope."""
    return api_key_issue(actor=ACTOR, tenant=tenant, name="test").secret


@pytest.fixture
def other_key(other_tenant):
    """A key of `other_tenant`, with every scope."""
    return api_key_issue(actor=ACTOR, tenant=other_tenant).secret


@pytest.fixture
def publish_only_key(tenant):
    return api_key_issue(actor=ACTOR, tenant=tenant, scopes=["publish"]).secret


@pytest.fixture
def subscribe_only_key(tenant):
    return api_key_issue(actor=ACTOR, tenant=tenant, scopes=["subscribe"]).secret


def asgi_client(key: str | None = None) -> httpx.AsyncClient:
    """An HTTP client that calls the whole ASGI application in-process, as daphne would."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application),
        base_url="http://testserver",
        headers=headers,
    )


@pytest.fixture
def api_client(api_key):
    """An in-process client authenticated with `api_key` (publishing needs a running loop)."""
    return asgi_client(api_key)
