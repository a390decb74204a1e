"""Provides the publish operation and its rules, the one way events enter the hub: the REST
views (`apis`), the ingest fast path (`ingest`) and the dashboard's test form all call
`publish_request`. Below it, `services.events_accept` hands the checked events to the engine.
"""

from rest_framework.exceptions import Throttled

from streams import runtime, services
from streams.backends import RateLimited
from streams.envelope import Envelope
from streams.event_input import body_expensive, events_read
from streams.idempotency import idempotent


def _accepted(envelope: Envelope) -> dict:
    return {
        "id": envelope.id,
        "seq": envelope.seq,
        "topic": envelope.topic,
        "type": envelope.type,
        "received_at": envelope.received_at.isoformat().replace("+00:00", "Z"),
    }


async def publish_request(
    *,
    tenant_id: int,
    rate: int | None,
    raw_body: bytes,
    path: str,
    idempotency_key: str | None,
    batch: bool,
) -> dict:
    """Publishes what a request to `/api/v1/events` (one event) or `/batch` sent, for the
    tenant whose `rate` (events/s, None: unlimited) applies: the rate peek before a large body,
    the bounded read and validation of `raw_body`, sequencing and fan-out, once per
    Idempotency-Key. Returns the 202 body; raises APIException (and HubUnavailable)."""

    async def produce() -> dict:
        if rate and body_expensive(len(raw_body)):
            # A tenant out of its rate costs nothing more than this check, whatever it sends.
            wait = await runtime.get_backend().rate_wait(tenant_id=tenant_id, rate=rate)
            if wait:
                raise Throttled(wait=wait, detail="Publish rate limit exceeded for this tenant.")
        events = await events_read(tenant_id=tenant_id, raw_body=raw_body, batch=batch)
        try:
            envelopes = await services.events_accept(tenant_id=tenant_id, events=events, rate=rate)
        except RateLimited as limited:
            raise Throttled(
                wait=limited.wait, detail="Publish rate limit exceeded for this tenant."
            ) from None
        if batch:
            return {"events": [_accepted(e) for e in envelopes]}
        return _accepted(envelopes[0])

    body, _ = await idempotent(
        tenant_id=tenant_id,
        key=idempotency_key,
        path=path,
        body=raw_body,
        produce=produce,
    )
    return body
