"""Provides the hub's supervisor: the one heartbeat loop per process that keeps its connections
honest. Each tick it pings the connections whose turn has come, closes WebSocket clients that
fell silent (4408) and slow consumers (4008), closes connections whose key, token, tenant or
session lost its right (4403, 1012, 4401), catches up events whose layer message never came,
and keeps the hub's channel-layer memberships from expiring."""

import asyncio
import logging
import random
import time

from channels.db import database_sync_to_async
from django.conf import settings

from streams.delivery import fairness
from streams.delivery.subscribers import Subscriber
from streams.revoked_tokens import arevoked_tokens_sync, revoked_tokens
from tenants.access import TENANT_SUSPENDED
from tenants.selectors import credentials_revoked, session_grants_revoked

logger = logging.getLogger(__name__)

# How often each hub re-checks that its connections' keys and tenants are still valid.
AUTH_RECHECK_SECONDS = 2.0


class Supervisor:
    """The upkeep of one hub's connections (`hub`: the Hub that made it, whose `tenants`,
    `close`, `drop`, `fill`, `deliver` and `backend` it uses)."""

    def __init__(self, hub) -> None:
        self.hub = hub
        self._credentials_revoked = database_sync_to_async(credentials_revoked)
        self._session_grants_revoked = database_sync_to_async(session_grants_revoked)
        # The engine's cursor at the last catch-up (None: none yet, every sequence is read),
        # and the tenants to read again whatever it says (their delivery task was running, or
        # this hub had not delivered up to their sequence yet).
        self._seq_clock: object = None
        self._recheck: set[int] = set()
        self._ready: set[int] = set()  # the tenants the last catch-up read

    async def run(self) -> None:
        """Runs for the life of the hub (started by Hub.start, cancelled at shutdown): a tick
        every second at most, each doing the rounds below."""
        interval = settings.EVENTHUB_HEARTBEAT_INTERVAL
        stale = settings.EVENTHUB_STALE_TIMEOUT
        tick = min(1.0, interval / 2, stale / 4)
        next_auth_check = time.monotonic() + AUTH_RECHECK_SECONDS
        group_expiry = getattr(self.hub.layer, "group_expiry", None)
        rejoin_every = group_expiry / 3 if group_expiry else None
        next_rejoin = time.monotonic() + (rejoin_every or 0)
        while True:
            await asyncio.sleep(tick)
            try:
                now = time.monotonic()
                await self._beat(now, interval, stale)
                await self._presence_lease()
                await self._catch_up()
                if now >= next_auth_check:
                    next_auth_check = now + AUTH_RECHECK_SECONDS
                    await self._close_revoked()
                if rejoin_every is not None and now >= next_rejoin:
                    next_rejoin = now + rejoin_every
                    await self.hub.rejoin_groups()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("heartbeat tick failed")

    async def _presence_lease(self) -> None:
        """Renews this process's presence lease, and takes out the presence of processes whose
        lease ran out (killed ones: theirs leave within three heartbeat intervals)."""
        try:
            await self.hub.presence.heartbeat()
        except Exception:
            logger.warning("could not renew the presence lease; will retry")

    async def _close_revoked(self) -> None:
        """Closes connections whose key was revoked, expired or lost its `subscribe` scope,
        whose token was revoked, or whose tenant was suspended, since they connected (4403; an
        SSE stream ends)."""
        subs = [
            sub
            for tenant in self.hub.tenants.values()
            for sub in tenant.subscribers
            if not sub.opening  # not welcomed yet: checked on the next round
        ]
        if not subs:
            return
        key_ids = {sub.key_id for sub in subs if sub.key_id is not None}
        tenant_ids = {sub.tenant_id for sub in subs}
        grants = {_grant(sub) for sub in subs if sub.session is not None}
        forbidden: set[tuple[int, int, str]] = set()
        ended: set[tuple[int, int, str]] = set()
        logged_out: set[tuple[int, int, str]] = set()
        try:
            bad_keys, bad_tenants = await self._credentials_revoked(
                key_ids=key_ids, tenant_ids=tenant_ids
            )
            if grants:  # most hubs hold no dashboard session: no thread hop for nothing
                forbidden, ended, logged_out = await self._session_grants_revoked(grants=grants)
            if any(sub.token is not None for sub in subs):
                await arevoked_tokens_sync()
        except Exception:
            logger.warning("could not re-check subscriber credentials; will retry")
            return
        for sub in subs:
            if sub.tenant_id in bad_tenants:
                await self.hub.close(sub, 4403, TENANT_SUSPENDED)
            elif sub.key_id is not None and sub.key_id in bad_keys:
                reason = "The key of this connection was revoked, expired or lost 'subscribe'."
                await self.hub.close(sub, 4403, reason)
            elif sub.token is not None and sub.token.token_id in revoked_tokens:
                await self.hub.close(sub, 4403, "The token of this connection was revoked.")
            elif sub.session is not None and _grant(sub) in forbidden:
                await self.hub.close(sub, 4403, "This session may no longer see this tenant.")
            elif sub.session is not None and _grant(sub) in ended:
                # Not final: after logging in again the browser holds a new session and is
                # admitted when it reconnects; after a logout it is refused then (4401).
                await self.hub.close(sub, 1012, "The session changed; reconnect.")
            elif sub.session is not None and _grant(sub) in logged_out:
                # Final: the password changed, and this session no longer signs its user in
                # (a stolen session ends here, as Django ends it for every other request).
                await self.hub.close(sub, 4401, "The password changed; log in again.")

    async def _catch_up(self) -> None:
        """Delivers events whose layer message never came (the layer is at-most-once): each
        tick, a tenant whose sequence is ahead of what this process delivered is filled from
        the replay buffer.

        Only the tenants whose sequence moved since the last tick are read (one Redis call, and
        one more for those): a hub holding a thousand quiet tenants costs Redis nothing per
        tick but that (bench/many_tenants.py).

        A tenant whose delivery task runs is left to it: what it has queued would be read
        again, and the heartbeat, which serves every tenant, would wait for its lock. It is read
        again on the next tick, and until its task has ended: a gap its queue dropped shows
        then, or with its next event."""
        tenants = self.hub.tenants
        ready = {t for t, tenant in tenants.items() if tenant.last_seq is not None}
        # Read whatever the clock says: the tenants whose last read left something to do, and
        # those that joined since the last tick (one that joined while that tick's clock was
        # being read may have moved before it, unseen by this hub).
        recheck = (self._recheck | (ready - self._ready)) & ready
        if not ready:
            self._ready = ready
            return
        try:
            clock, moved = await self.hub.backend.changed_seqs(ready, self._seq_clock)
            for tenant_id in recheck - moved.keys():
                moved[tenant_id] = await self.hub.backend.current_seq(tenant_id)
        except Exception:
            return  # nothing moved on: the same reads next tick
        self._seq_clock, self._ready, self._recheck = clock, ready, set()
        for tenant_id, current in moved.items():
            tenant = tenants.get(tenant_id)
            if tenant is None or tenant.last_seq is None:
                continue
            if tenant.draining:
                self._recheck.add(tenant_id)
                continue
            if current <= tenant.last_seq:
                continue
            try:
                missing = await self.hub.fill(tenant_id, tenant.last_seq + 1, current)
                if missing:
                    await self.hub.deliver(tenant_id, missing)
            except Exception:
                logger.warning("could not catch tenant %s up; will retry", tenant_id)
            # Until this hub has delivered up to `current`, the tenant is read again each tick
            # (a fill that found nothing, or failed, is not the end of it).
            self._recheck.add(tenant_id)

    async def _beat(self, now: float, interval: float, stale: float) -> None:
        """One heartbeat tick: closes stale connections and slow consumers, and pings each
        connection whose own turn has come.

        Each connection is pinged every `interval` from a first ping at a random point of the
        second half of its first interval, not all at once: a crowd that connected together
        would otherwise be pinged together, and its thousands of pongs, arriving together,
        held the loop for a few hundred milliseconds (bench/noisy.py burst) every interval.
        Never in the first half: a client needs no ping that soon after its welcome.
        """
        max_backlog = settings.EVENTHUB_MAX_BUFFER_BYTES
        since = time.perf_counter()
        for tenant in list(self.hub.tenants.values()):
            for count, sub in enumerate(list(tenant.subscribers), 1):
                if not count % 64 and time.perf_counter() - since > fairness.FAIR_SLICE_SECONDS:
                    # Thousands of pings at once held the loop for tens of milliseconds.
                    await fairness.give_turn()
                    since = time.perf_counter()
                if sub.closed or sub.opening:
                    continue  # its welcome must be the first thing it gets
                # Checked once a tick, after the server had time to flush: a burst may pass
                # through, a client that stopped reading may not. Before the silence check: a
                # client that left this much unread has not seen the pings behind it either,
                # and 4008 tells it what to do (reconnect with its last id).
                if sub.backlog is not None and sub.backlog() > max_backlog:
                    await self.hub.close(sub, 4008, "slow consumer: reconnect with your last id")
                    continue
                # Not while it replays (`pending` set): it cannot be asked for a pong then,
                # and the replay closes a client that stops taking it as a slow consumer
                # (4008, after half the stale timeout), which is what it should learn.
                if sub.silence_closes and sub.pending is None and now - sub.last_seen > stale:
                    await self.hub.close(sub, 4408, "no frame from the client in time")
                    continue
                if not sub.next_ping:
                    sub.next_ping = now + random.uniform(interval / 2, interval)
                if now >= sub.next_ping:
                    sub.next_ping = now + interval
                    try:
                        await sub.send_ping()
                    except Exception:
                        self.hub.drop(sub)


def _grant(sub: Subscriber) -> tuple[int, int, str]:
    """(user, tenant, session key) of a connection a dashboard session opened."""
    assert sub.session is not None, "asked of session connections only"
    user_id, session_key = sub.session
    return user_id, sub.tenant_id, session_key
