"""Only login and logout are mounted under /accounts/: the password reset and change pages
need SMTP and build their links from the request's Host (issue 11)."""

import pytest

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:No directory at")]


@pytest.mark.parametrize(
    "path",
    [
        "/accounts/password_reset/",
        "/accounts/password_reset/done/",
        "/accounts/reset/MQ/set-password/",
        "/accounts/password_change/",
        "/accounts/password_change/done/",
    ],
)
def test_the_password_pages_are_not_there(client, path):
    assert client.get(path).status_code == 404
    assert client.post(path, {"email": "someone@example.com"}).status_code == 404


def test_login_and_logout_are_there(client):
    assert client.get("/accounts/login/").status_code == 200
    assert client.post("/accounts/logout/").status_code in (200, 302)
