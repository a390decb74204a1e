"""A subscriber token revoked through one web process is refused and closed on every other at
once: the revocation travels through the channel layer, not only the database."""

import time

import httpx
import pytest

from tests.clients import ws_connect

pytestmark = pytest.mark.e2e

# The supervisor's re-check alone would take up to about 3 s, and another process's connects
# would admit the token for up to EVENTHUB_KEY_CACHE_SECONDS (2 s): well under both.
AT_ONCE = 1.5


async def test_a_token_revoked_on_one_process_is_refused_and_closed_on_the_other_at_once(two_webs):
    auth = {"Authorization": f"Bearer {two_webs.key}"}
    async with httpx.AsyncClient(headers=auth, timeout=10, trust_env=False) as client:
        response = await client.post(f"{two_webs.web_a.url}/api/v1/tokens", json={"topics": ["*"]})
        issued = response.json()
        # Connecting reads the process's view of revocations: web_b's is fresh from here on.
        live = await ws_connect(two_webs.web_b.ws_url, token=issued["token"])
        await live.welcome()

        response = await client.delete(f"{two_webs.web_a.url}/api/v1/tokens/{issued['id']}")
        revoked_at = time.monotonic()
        assert response.status_code == 204

        again = await ws_connect(two_webs.web_b.ws_url, token=issued["token"])
        refused = await again.next_frame()
        assert (refused["type"], refused["code"]) == ("error", 4401)
        assert await live.closed(within=5) == 4403
        assert time.monotonic() - revoked_at < AT_ONCE
        await again.close()
