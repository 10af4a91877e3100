"""The Host allow-list on its own (sans-IO): which Host values a server answers to."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshsub_trio._transports._hosts import HostPolicy, is_address, split_host


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("localhost", ("localhost", None)),
        ("LocalHost:9081", ("localhost", "9081")),
        ("localhost.", ("localhost", None)),
        (" example.com:80 ", ("example.com", "80")),
        ("example.com:", ("example.com", None)),  # an empty port is allowed (RFC 3986)
        ("[::1]", ("[::1]", None)),
        ("[::1]:443", ("[::1]", "443")),
        ("", None),
        (":80", None),
        ("::1", None),  # IPv6 must be bracketed
        ("[::1", None),
        ("[::1]x", None),
        ("a:b", None),
        ("a:8o", None),
        ("a:١٢", None),  # non-ASCII digits are not a port
    ],
)
def test_split_host(value: str, parts: tuple[str, str | None] | None) -> None:
    assert split_host(value) == parts


@pytest.mark.parametrize(
    ("name", "address"),
    [("127.0.0.1", True), ("10.0.0.5", True), ("[::1]", True), ("[fe80::1]", True),
     ("[127.0.0.1]", False), ("::1", False), ("127.1", False), ("2130706433", False),
     ("localhost", False), ("1.2.3.4.nip.io", False)],
)  # fmt: skip
def test_is_address(name: str, address: bool) -> None:
    """Only dotted IPv4 and bracketed IPv6: what a browser sends for an address."""
    assert is_address(name) is address


def test_default_serves_loopback_and_addresses_only() -> None:
    policy = HostPolicy(None, bound=("127.0.0.1",))
    for host in ("localhost", "localhost:1", "127.0.0.1:9081", "[::1]", "192.168.1.9"):
        assert policy.allows(host), host
    for host in ("evil.example", "localhost.evil.example", "evil.localhost", "", "x:y:z"):
        assert not policy.allows(host), host
    assert policy.allows(None)  # no Host: not from a browser


def test_a_named_bind_host_is_served() -> None:
    policy = HostPolicy(None, bound=("meshery.local",))
    assert policy.allows("meshery.local:9081") and policy.allows("MESHERY.LOCAL")
    assert not policy.allows("evil.example")


@pytest.mark.parametrize("bound", ["0.0.0.0", "::", "", "[::]"])
def test_wildcard_bind(bound: str) -> None:
    """No list: any host (the server cannot know its names). A list: checked."""
    assert HostPolicy(None, bound=("127.0.0.1", bound)).allows("evil.example")
    listed = HostPolicy(("meshery.example",), bound=(bound,))
    assert listed.allows("meshery.example") and not listed.allows("evil.example")


def test_entries() -> None:
    policy = HostPolicy(("a.example", "b.example:8443", "*.c.example", "*.d.example:1"))
    assert policy.allows("a.example:1") and policy.allows("A.EXAMPLE")
    assert policy.allows("b.example:8443") and not policy.allows("b.example:8444")
    assert not policy.allows("b.example")
    assert policy.allows("x.c.example") and policy.allows("x.y.c.example:5")
    assert not policy.allows("c.example") and not policy.allows("xc.example")
    assert policy.allows("x.d.example:1") and not policy.allows("x.d.example:2")
    assert HostPolicy(("*",)).allows("anything.at.all")


def test_bad_entries_are_refused_at_start() -> None:
    with pytest.raises(ValueError, match="not a host"):
        HostPolicy(("a:b:c",))


def test_remembered_values_stay_bounded() -> None:
    """Allowed values are remembered for speed, but not without bound."""
    policy = HostPolicy(None, bound=("127.0.0.1",))
    for port in range(5000):
        assert policy.allows(f"localhost:{port}")
    assert len(policy._seen) <= 256


hosts = st.text(alphabet="abcxyz.-:[]0123456789 LOCALHOST", max_size=25)


@settings(max_examples=500, deadline=None)
@given(value=st.text(max_size=40) | hosts)
def test_any_text_is_judged_without_error(value: str) -> None:
    for policy in (HostPolicy(None, bound=("127.0.0.1",)), HostPolicy(("*.b", "a:1"))):
        assert policy.allows(value) in (True, False)


@settings(max_examples=500, deadline=None)
@given(value=hosts, port=st.integers(0, 65535))
def test_case_and_ports_do_not_matter_for_plain_entries(value: str, port: int) -> None:
    """ASCII case never changes the answer; nor does a port, unless an entry names one."""
    policy = HostPolicy(("a.example", "*.b.example"), bound=("127.0.0.1",))
    assert policy.allows(value) == policy.allows(value.upper()) == policy.allows(value.lower())
    parts = split_host(value)
    if parts is not None and parts[1] is None:
        assert policy.allows(value) == policy.allows(f"{value.strip()}:{port}")
