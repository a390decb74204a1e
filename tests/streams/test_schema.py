"""The OpenAPI schema tells a client author every answer an operation can give."""

import pytest

from tests.conftest import asgi_client

pytestmark = pytest.mark.django_db


async def schema() -> dict:
    async with asgi_client() as client:
        response = await client.get("/api/schema/", headers={"Accept": "application/json"})
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/events/batch"])
async def test_publishing_documents_its_error_answers(path):
    responses = (await schema())["paths"][path]["post"]["responses"]
    assert {"202", "400", "401", "403", "413", "429", "503"} <= set(responses)
    assert "Retry-After" in responses["429"]["description"]


async def test_history_documents_its_error_answers():
    responses = (await schema())["paths"]["/api/v1/events"]["get"]["responses"]
    assert {"200", "400", "401", "403"} <= set(responses)


async def test_tokens_document_their_holder_their_id_and_their_revocation():
    document = await schema()
    issue = document["paths"]["/api/v1/tokens"]["post"]
    revoke = document["paths"]["/api/v1/tokens/{token_id}"]["delete"]
    token_input = document["components"]["schemas"]["TokenInput"]["properties"]
    token = document["components"]["schemas"]["Token"]["properties"]

    assert {"topics", "ttl", "user", "info"} <= set(token_input)
    assert {"token", "id", "expires_at"} <= set(token)
    assert "201" in issue["responses"]
    assert {"204", "401", "403", "404"} <= set(revoke["responses"])
