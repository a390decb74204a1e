"""With DEBUG off the hub refuses to start with a SECRET_KEY anyone could guess: whoever knows
it forges sessions and subscriber tokens for every tenant (issue 11)."""

import subprocess

import pytest

from tests.processes import base_env, manage_run

STRONG = "x7Gq!2pLm9Zr#4vTn8Wc$1bYh6Kd%3sJf5Ua^0eRi*Oo&Pl(Mk)Nj_Hb+Vg=Fc"


def check(secret_key: str, debug: str = "0") -> subprocess.CompletedProcess:
    env = base_env(SECRET_KEY=secret_key, DEBUG=debug, DATABASE_URL="sqlite:///:memory:")
    return manage_run(env, "check")


@pytest.mark.parametrize(
    "weak",
    [
        "short-but-random-Zq81",
        "change-me-to-50-random-characters",
        "dev-insecure-" + "a8Kq2" * 10,
        "django-insecure-" + "a8Kq2" * 10,
        "a" * 64,
    ],
    ids=[
        "shorter-than-50",
        "env-example-placeholder",
        "make-run-key",
        "startproject-key",
        "one-letter",
    ],
)
def test_a_weak_secret_key_stops_the_hub_with_debug_off(weak):
    done = check(weak)

    assert done.returncode != 0
    assert "SECRET_KEY is too weak" in done.stderr


def test_a_strong_secret_key_starts_it():
    done = check(STRONG)

    assert done.returncode == 0, done.stderr


def test_development_keeps_its_generated_key():
    assert check("dev-insecure-" + "a8Kq2" * 10, debug="1").returncode == 0


def check_with_fallbacks(fallbacks: str) -> subprocess.CompletedProcess:
    env = base_env(
        SECRET_KEY=STRONG,
        SECRET_KEY_FALLBACKS=fallbacks,
        DEBUG="0",
        DATABASE_URL="sqlite:///:memory:",
    )
    return manage_run(env, "check")


@pytest.mark.parametrize(
    "fallbacks",
    ["the-old-key", STRONG[::-1] + ", x", "dev-insecure-" + "a8Kq2" * 10],
    ids=["env-example-placeholder", "one-weak-among-strong", "make-run-key"],
)
def test_a_weak_fallback_key_stops_the_hub_with_debug_off_as_a_weak_key_does(fallbacks):
    done = check_with_fallbacks(fallbacks)

    assert done.returncode != 0
    assert "SECRET_KEY_FALLBACKS is too weak" in done.stderr


def test_strong_fallback_keys_are_read_as_written_spaces_and_dollars_too():
    old = "$" + STRONG[1:]  # Django's keys may start with "$"
    env = base_env(
        SECRET_KEY=STRONG,
        SECRET_KEY_FALLBACKS=f" {old} , {STRONG[::-1]} ,",
        DEBUG="0",
        DATABASE_URL="sqlite:///:memory:",
    )
    done = manage_run(
        env, "shell", "-c", "from django.conf import settings; print(settings.SECRET_KEY_FALLBACKS)"
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == repr([old, STRONG[::-1]])
