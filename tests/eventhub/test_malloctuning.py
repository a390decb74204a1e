"""A serving process keeps a freed publish body's memory for the next body instead of faulting
fresh pages in for every copy (glibc's malloc thresholds)."""

import json
import os
import platform

import pytest

from eventhub import malloctuning
from eventhub.daphne_bodies import request_buffer_bytes
from tests.processes import python_run

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# Copies a 4 MiB body the way the server does (bytes read back, then decoded), ten times, and
# prints the page faults of the last eight and what install() answered.
COPIES = """
import json, os, resource, django
django.setup()
from eventhub import malloctuning
installed = malloctuning.install() if os.environ.get("TUNE") else False
body = b"x" * (4 << 20)
def copies():
    data = bytes(bytearray(body))
    text = data.decode()
    del data, text
copies(); copies()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    copies()
print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before,
                  "installed": installed}))
"""


def copy_faults(**env: str) -> dict:
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD"))  # glibc's malloc only
    }
    environment.update(DJANGO_SETTINGS_MODULE="eventhub.settings", DEBUG="1", **env)
    done = python_run(environment, "-c", COPIES, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_thresholds_keep_a_block_of_a_body_s_size_and_two_of_them_free():
    mmap, trim = malloctuning.thresholds()

    assert request_buffer_bytes() < mmap <= malloctuning.MAX_MMAP_THRESHOLD
    assert trim == 2 * mmap


@glibc
def test_a_freed_body_copy_is_reused_not_faulted_in_again():
    pages_per_copy = (4 << 20) // os.sysconf("SC_PAGE_SIZE")
    if copy_faults()["faults"] < 8 * pages_per_copy:
        # Each copy faults its pages in again on this machine (24 320 faults for the eight);
        # with transparent huge pages always on, a few 2 MiB pages stand for them.
        pytest.skip("this kernel does not fault a fresh block in page by page")

    tuned = copy_faults(TUNE="1")

    assert tuned["installed"] is True
    assert tuned["faults"] < pages_per_copy  # the eight together: less than one copy's pages


@glibc
def test_glibc_settings_the_operator_gave_are_kept():
    assert copy_faults(TUNE="1", MALLOC_TRIM_THRESHOLD_="131072")["installed"] is False
    assert (
        copy_faults(TUNE="1", GLIBC_TUNABLES="glibc.malloc.trim_threshold=1")["installed"] is False
    )
    # Other tunables are not these thresholds.
    assert copy_faults(TUNE="1", GLIBC_TUNABLES="glibc.malloc.arena_max=2")["installed"] is True


@glibc
def test_the_tuning_can_be_turned_off():
    assert copy_faults(TUNE="1", EVENTHUB_MALLOC_TUNING="0")["installed"] is False
