"""Provides the turn every long piece of delivery work gives the rest of the loop, which serves
every tenant: a broadcast, a run of them, a heartbeat round yield after this long."""

# How long one tenant's deliveries (or one round of the heartbeat) may hold the loop before the
# others get a turn. Read as `fairness.FAIR_SLICE_SECONDS`, so that tests can shorten it.
FAIR_SLICE_SECONDS = 0.001
