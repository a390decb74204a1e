"""`make run`'s admin user: a random password shown once, never `admin` / `admin`; a database
that still has that password fails `check --deploy` and is not served with DEBUG off (issue 11)."""

import io
import re
import subprocess
import tempfile
from pathlib import Path

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.checks import run_checks
from django.core.management import call_command

from tests.processes import Process, base_env, manage

pytestmark = pytest.mark.django_db


def test_make_run_prints_a_random_admin_password_once_and_it_works(settings):
    settings.DEBUG = True
    out = io.StringIO()
    call_command("demo_setup", stdout=out)
    password = re.search(r"login admin / (\S+), shown once", out.getvalue()).group(1)

    assert password != "admin"
    assert len(password) >= 16
    assert authenticate(username="admin", password=password) is not None
    again = io.StringIO()
    call_command("demo_setup", stdout=again)
    assert password not in again.getvalue()


def test_check_deploy_fails_while_the_demo_user_has_the_old_password():
    get_user_model().objects.create_superuser("admin", "a@example.com", "admin")

    errors = [e.id for e in run_checks(include_deployment_checks=True)]

    assert "tenants.E001" in errors


def test_check_deploy_passes_once_that_password_is_changed():
    user = get_user_model().objects.create_superuser("admin", "a@example.com", "admin")
    user.set_password("something only its owner knows, 51c")
    user.save()

    assert "tenants.E001" not in [e.id for e in run_checks(include_deployment_checks=True)]


@pytest.mark.django_db(transaction=True)
def test_daphne_refuses_to_serve_the_old_demo_password_with_debug_off():
    with tempfile.TemporaryDirectory() as workdir:
        env = base_env(DATABASE_URL=f"sqlite:///{Path(workdir) / 'db.sqlite3'}")
        manage(env, "migrate", "--no-input")
        make_admin = (
            "from django.contrib.auth import get_user_model; "
            "get_user_model().objects.create_superuser('admin', 'a@example.com', 'admin')"
        )
        manage(env, "shell", "-c", make_admin)
        web = Process("web", env, Path(workdir))
        with web.log_path.open("ab") as log:
            proc = subprocess.Popen(web.argv, env=web.env, stdout=log, stderr=subprocess.STDOUT)
        try:
            assert proc.wait(timeout=30) != 0
        finally:
            if proc.poll() is None:
                proc.kill()
        assert "Refusing to serve" in web.log()

        change = (
            "from django.contrib.auth import get_user_model; "
            "u = get_user_model().objects.get(username='admin'); "
            "u.set_password('a secret of its own, 0x51c'); u.save()"
        )
        manage(env, "shell", "-c", change)
        served = Process("web", env, Path(workdir)).start()
        served.stop()
