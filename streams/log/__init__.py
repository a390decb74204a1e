"""The event log, on the path an accepted event takes to storage: the ORM writes (`writes`) and
reads (`reads`) of events and idempotent responses, the embedded queue writer (`writer`) and the
Redis stream worker (`worker`), which retry alike (`retry`).

Nothing here knows the running process (`streams.runtime`): the engines import it, never the
other way round."""
