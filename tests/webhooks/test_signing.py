"""The signature is Standard Webhooks': the specification's own test vector verifies."""

import base64

from webhooks.signing import secret_new, secret_open, secret_seal, signature


def test_it_signs_the_standard_webhooks_example_as_the_specification_does():
    # The example of the specification's reference libraries (standard-webhooks/standard-webhooks,
    # libraries/python/standardwebhooks/tests.py and the spec's "Signature scheme").
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    msg_id = "msg_p5jXN8AQM9LWM0D4loKWxJek"
    payload = '{"test": 2432232314}'

    assert signature(secret, msg_id, 1614265330, payload) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_a_new_secret_is_whsec_and_24_random_bytes():

    secret = secret_new()

    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    assert secret_new() != secret


def test_a_sealed_secret_does_not_show_the_secret_and_opens_to_it():
    secret = secret_new()

    sealed = secret_seal(secret)

    assert secret.removeprefix("whsec_") not in sealed
    assert secret_open(sealed) == secret
