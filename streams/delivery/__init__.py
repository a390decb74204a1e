"""Delivery, on the path an accepted event takes to its subscribers: admission of a subscribe
request (`admission`), the consumers of both transports (`consumers/`), the replay a reconnect
gets (`replay`), the per-process hub that fans each event out (`hub`), the connections as it
sees them (`subscribers`) and the daphne internals it writes through (`daphne_transport`)."""
