"""Compares the two channels-redis layers for Eventhub's fan-out: the time of one `group_send`
at several group sizes, and what a burst to a consumer that is not reading yet leaves it.

    .venv/bin/python bench/channel_layers.py [--redis-url redis://127.0.0.1:6379/13]

It empties the Redis database it is given (13 by default). Loopback only; bounded in count
and time: every receive has a timeout and the whole run is capped by --timeout.
"""

import argparse
import asyncio
import sys
import time

import redis
from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


async def group_send_times(layer, members: int, sends: int) -> tuple[float, float]:
    """(p50, p99) in ms of group_send to a group of `members` channels."""
    group = f"bench-{members}"
    channels = [await layer.new_channel() for _ in range(members)]
    for channel in channels:
        await layer.group_add(group, channel)
    times = []
    for i in range(sends):
        started = time.perf_counter()
        await layer.group_send(group, {"type": "event.published", "i": i})
        times.append((time.perf_counter() - started) * 1000)
    for channel in channels:
        await layer.group_discard(group, channel)
    if hasattr(layer, "flush"):
        await layer.flush()
    return percentile(times, 50), percentile(times, 99)


async def burst_kept(layer, burst: int) -> int:
    """How many of `burst` group messages a consumer that starts reading only afterwards gets."""
    channel = await layer.new_channel()
    await layer.group_add("burst", channel)
    # A pub/sub subscription needs its receive loop running before anything is published.
    receiving = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0.2)
    for i in range(burst):
        await layer.group_send("burst", {"type": "event.published", "i": i})
    got = 0
    try:
        await asyncio.wait_for(receiving, 2)
        got = 1
        while got < burst:
            await asyncio.wait_for(layer.receive(channel), 1)
            got += 1
    except TimeoutError:
        pass
    await layer.group_discard("burst", channel)
    return got


async def run(url: str, sizes: list[int], sends: int, burst: int) -> None:
    layers = {
        "RedisChannelLayer (defaults: capacity 100)": lambda: RedisChannelLayer(hosts=[url]),
        "RedisPubSubChannelLayer": lambda: RedisPubSubChannelLayer(hosts=[url]),
    }
    print(f"group_send times over {sends} sends; burst of {burst} to one consumer\n")
    print(f"{'layer':<44} {'members':>7} {'p50 ms':>7} {'p99 ms':>7}")
    kept = {}
    for name, make in layers.items():
        for members in sizes:
            redis.Redis.from_url(url).flushdb()
            layer = make()
            p50, p99 = await group_send_times(layer, members, sends)
            print(f"{name:<44} {members:>7} {p50:>7.3f} {p99:>7.3f}")
            await close(layer)
        redis.Redis.from_url(url).flushdb()
        layer = make()
        kept[name] = await burst_kept(layer, burst)
        await close(layer)
    print()
    for name, got in kept.items():
        lost = burst - got
        note = f", {lost} lost with no error" if lost else ", none lost"
        print(f"{name}: burst of {burst} -> {got} received{note}")
    redis.Redis.from_url(url).flushdb()


async def close(layer) -> None:
    if hasattr(layer, "flush"):
        await layer.flush()
    if hasattr(layer, "close_pools"):
        await layer.close_pools()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--sizes", default="1,100,1000", help="group sizes")
    parser.add_argument("--sends", type=int, default=200)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x]
    try:
        asyncio.run(
            asyncio.wait_for(run(args.redis_url, sizes, args.sends, args.burst), args.timeout)
        )
    except TimeoutError:
        print(f"aborted: over {args.timeout:g} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
