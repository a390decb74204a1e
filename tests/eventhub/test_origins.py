"""Which subscribe requests may count a dashboard session: the Origin guard in front of both
transports (issue 11: an SSE request without Origin is same-origin only when Sec-Fetch-Site,
where a browser sends it, agrees)."""

import pytest

from eventhub.origins import OriginGuard


async def session_allowed(scope_type: str, headers: list[tuple[bytes, bytes]]) -> bool | None:
    seen = {}

    async def app(scope, receive, send):
        seen["session_allowed"] = scope["session_allowed"]

    await OriginGuard(app)({"type": scope_type, "headers": headers}, None, None)
    return seen.get("session_allowed")


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ([], True),  # no Origin, no Sec-Fetch-Site: a same-origin GET of an older browser
        ([(b"sec-fetch-site", b"same-origin")], True),
        ([(b"sec-fetch-site", b"none")], True),  # typed into the address bar
        ([(b"sec-fetch-site", b"cross-site")], False),
        ([(b"sec-fetch-site", b"same-site")], False),  # another subdomain is another origin
        ([(b"origin", b"http://localhost")], True),
        ([(b"origin", b"https://evil.example")], False),
    ],
    ids=["bare", "same-origin", "navigation", "cross-site", "same-site", "allowed", "foreign"],
)
async def test_an_sse_request_may_use_the_session_only_from_the_hubs_own_origin(
    settings, headers, allowed
):
    settings.ALLOWED_HOSTS = ["localhost"]
    settings.EVENTHUB_ALLOWED_ORIGINS = []

    assert await session_allowed("http", headers) is allowed
