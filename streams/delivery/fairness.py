"""Provides the turn every long piece of delivery work gives the rest of the loop, which serves
every tenant: a broadcast, a run of them, a heartbeat round yield after this long, for this many
loop turns."""

import asyncio

# How long one tenant's deliveries (or one round of the heartbeat) may hold the loop before the
# others get a turn. Read as `fairness.FAIR_SLICE_SECONDS`, so that tests can shorten it.
FAIR_SLICE_SECONDS = 0.001
# Loop turns given at each yield. What another tenant needs takes several in a row, each
# scheduled by the one before: a publish is read by Twisted, run by its application, carried by
# the layer to the hub's receive loop, then to its tenant's delivery task, a turn each. With one
# turn per slice, a quiet tenant's publish waited one slice of the noisy tenant's broadcast per
# step; with two, one per two steps (bench/noisy.py, burst, 15 s phases: quiet p99 13.6-20.2 ms
# in four runs with one turn, 12.3-13.1 ms in two with two; bench/fanout.py burst at N=1000
# delivered as many per second, within its run-to-run spread, and answered POSTs sooner).
TURNS = 2


async def give_turn() -> None:
    """Awaited by delivery work between its pieces: inside a broadcast or a run once it has held
    the loop for FAIR_SLICE_SECONDS, and by a tenant's delivery task between layer messages."""
    for _ in range(TURNS):
        await asyncio.sleep(0)
