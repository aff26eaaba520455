"""An IPv6 exemption holding Teredo or 6to4 addresses exempts an IPv4 address only when it
pins it (every address in it one of that client's): a Teredo server's prefix, ``2002::/16``
or ``::/0`` hold such addresses of every IPv4 address, and exempted them all."""

from __future__ import annotations

import pytest

from sqreen.server.playbooks import is_exempt, parse_playbooks

PLAYBOOK = (
    '[[playbook]]\nid = "bf"\nevents = ["auth.login.failure"]\ngroup_by = "ip"\n'
    'threshold = 5\nwindow = "5m"\naction = "block_ip"\nduration = "1h"\n'
)


def exempt(network: str, key: str) -> bool:
    (playbook,) = parse_playbooks(PLAYBOOK + f'exempt_ips = ["{network}"]\n').playbooks
    return is_exempt(playbook, key)


@pytest.mark.parametrize("network", ["2001:0:4136:e378::/64", "2002::/16", "::/0"])
def test_a_wide_tunnel_network_exempts_no_ipv4_address(network: str) -> None:
    for key in ("203.0.113.7", "8.8.8.8", "192.0.2.45"):
        assert not exempt(network, key)
    assert exempt(network, "2001:db8:1:2::/64") == (network == "::/0")


@pytest.mark.parametrize(
    "network",
    [
        "2002:c000:22d::/48",  # 6to4: the /48 of 192.0.2.45
        "2002:c000:22d:1234::/64",  # or a network inside it
        "2001:0:4136:e378:8000:63bf:3fff:fdd2/128",  # RFC 4380's Teredo address of it
    ],
)
def test_a_network_pinning_one_client_exempts_it(network: str) -> None:
    assert exempt(network, "192.0.2.45")
    assert not exempt(network, "192.0.2.44")


@pytest.mark.parametrize(
    "network", ["2002:c000::/32", "2002:c000:22c::/47", "2001:0:4136:e378:8000:63bf:3fff:fdd2/127"]
)
def test_a_network_pinning_part_of_a_client_exempts_none(network: str) -> None:
    assert not exempt(network, "192.0.2.45")


@pytest.mark.parametrize("key", ["64:ff9b::a00:9", "64:ff9b::10.0.0.9", "64:ff9b:1::a00:9"])
def test_an_ipv4_network_exempts_the_nat64_addresses_of_its_clients(key: str) -> None:
    """Counted as itself (each one IPv4 client's), a NAT64 address was exempt from nothing
    an IPv4 network exempted, while it was private (no block) as that client's address."""
    assert exempt("10.0.0.0/8", key)
    assert not exempt("192.168.0.0/16", key)
    assert not exempt("10.0.0.0/8", "64:ff9b::b00:9")
