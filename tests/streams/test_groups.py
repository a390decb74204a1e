"""Channel-layer group names (streams.groups): tenant isolation rides on them."""

import re

import pytest
from channels.layers import InMemoryChannelLayer
from hypothesis import given
from hypothesis import strategies as st

from streams.groups import tenant_group

GROUP_NAME = re.compile(r"^[a-zA-Z\d\-_.]+$")
LARGEST_ID = 2**63 - 1  # a BigAutoField


@pytest.mark.parametrize("tenant_id", [1, 42, LARGEST_ID])
def test_a_tenant_group_is_a_valid_channels_group_name(tenant_id):
    name = tenant_group(tenant_id)
    assert GROUP_NAME.fullmatch(name)
    assert len(name) < 100
    InMemoryChannelLayer().require_valid_group_name(name)  # raises TypeError if not


def test_a_tenant_group_names_the_tenant():
    assert tenant_group(7) == "eventhub.tenant.7"


@given(
    st.integers(min_value=1, max_value=LARGEST_ID), st.integers(min_value=1, max_value=LARGEST_ID)
)
def test_two_tenants_never_share_a_group(first, second):
    assert GROUP_NAME.fullmatch(tenant_group(first))
    assert len(tenant_group(first)) < 100
    assert (tenant_group(first) == tenant_group(second)) == (first == second)


@pytest.mark.parametrize(
    "tenant_id", [0, -1, True, False, "1", "1.tenant.2", 1.0, None, 2.5, b"1", [1]]
)
def test_it_refuses_anything_but_a_positive_integer(tenant_id):
    with pytest.raises(ValueError, match="positive integer"):
        tenant_group(tenant_id)
