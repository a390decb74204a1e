"""Provides presence: who is connected to each exact topic of a tenant, across tabs, transports
and processes (`tracker`: this process's connections and their grace; `store`: the state every
process shares, in the process or in Redis; `selectors`: what the API reads)."""
