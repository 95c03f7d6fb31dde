"""``hostvisor certs``: a fleet's CA and certificates, verified, and used in real mTLS
handshakes between a Manager and daemons."""

from __future__ import annotations

import datetime
import ipaddress
import re
import stat
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from hypothesis import given, strategies as st

from tests.transport.manager.service_helpers import connected, sqlite_store
from tests.transport.manager.test_service_tls import calls_for
from transport import ClientTls, RemoteError, ServerTls, StatusCode
from transport._certs import (
    CertificateError,
    CertificateExistsError,
    FleetCertificates,
    KeyPair,
    make_fleet_certificates,
    parse_node,
)
from transport.daemon._cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, main
from transport.manager import NotFoundError

SAFETY_S = 60
NOW = datetime.datetime(2026, 12, 3, 12, 0, tzinfo=datetime.UTC)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def verifier_store(ca: Path) -> Store:
    return Store([load(ca)])


def verify_server(pair: KeyPair, ca: Path, name: str, at: datetime.datetime = NOW) -> None:
    """Verify ``pair`` as a TLS server certificate for ``name``, as a client would."""
    try:
        subject: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        subject = x509.DNSName(name)
    policy = PolicyBuilder().store(verifier_store(ca)).time(at)
    policy.build_server_verifier(subject).verify(load(pair.cert), [])


def verify_client(pair: KeyPair, ca: Path, at: datetime.datetime = NOW) -> list[x509.GeneralName]:
    """Verify ``pair`` as a TLS client certificate, as a server would; its SANs."""
    policy = PolicyBuilder().store(verifier_store(ca)).time(at)
    verified = policy.build_client_verifier().verify(load(pair.cert), [])
    return list(verified.subjects or [])


def common_name(pair: KeyPair) -> str:
    (attribute,) = load(pair.cert).subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(attribute.value)


@pytest.fixture
def fleet(tmp_path: Path) -> FleetCertificates:
    return make_fleet_certificates(
        tmp_path / "pki",
        manager_hosts=["127.0.0.1", "manager.example.org"],
        node_ids=["node-1", "node_2"],
        node_hosts={"node-1": ["127.0.0.1", "node-1.example.org"]},
        days=30,
        now=NOW,
    )


def test_every_certificate_verifies_for_its_role(fleet: FleetCertificates) -> None:
    """The Manager's server certificate for each of its hosts, the nodes' both as servers
    (for their hosts) and as clients, the Manager's client certificate against the
    daemons' clients CA; each names what the Manager reads."""
    for host in ("127.0.0.1", "manager.example.org"):
        verify_server(fleet.manager, fleet.ca.cert, host)
    node_1 = fleet.nodes["node-1"]
    for host in ("127.0.0.1", "node-1.example.org", "node-1"):
        verify_server(node_1, fleet.ca.cert, host)
    assert common_name(node_1) == "node-1"
    assert verify_client(node_1, fleet.ca.cert) == [
        x509.DNSName("node-1"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.DNSName("node-1.example.org"),
    ]
    assert common_name(fleet.nodes["node_2"]) == "node_2"
    assert verify_client(fleet.nodes["node_2"], fleet.ca.cert) == [x509.DNSName("node_2")]
    assert common_name(fleet.manager_client) == "hostvisor-manager"
    verify_client(fleet.manager_client, fleet.daemon_clients_ca.cert)


def test_a_node_certificate_cannot_call_daemons(fleet: FleetCertificates) -> None:
    """Daemons trust the clients CA, which signed the Manager's client certificate only;
    the Manager's server certificate is no client certificate, nor valid for other names."""
    with pytest.raises(VerificationError):
        verify_client(fleet.nodes["node-1"], fleet.daemon_clients_ca.cert)
    with pytest.raises(VerificationError):
        verify_client(fleet.manager_client, fleet.ca.cert)
    with pytest.raises(VerificationError):
        verify_client(fleet.manager, fleet.ca.cert)
    with pytest.raises(VerificationError):
        verify_server(fleet.manager, fleet.ca.cert, "other.example.org")
    with pytest.raises(VerificationError):
        verify_server(fleet.nodes["node_2"], fleet.ca.cert, "127.0.0.1")


def test_validity_starts_an_hour_before_now_and_lasts_the_days_asked(
    fleet: FleetCertificates,
) -> None:
    for pair in (fleet.ca, fleet.manager, fleet.nodes["node-1"]):
        cert = load(pair.cert)
        assert cert.not_valid_before_utc == NOW - datetime.timedelta(hours=1)
        assert cert.not_valid_after_utc == NOW + datetime.timedelta(days=30)
    assert fleet.not_valid_after == NOW + datetime.timedelta(days=30)
    with pytest.raises(VerificationError):
        verify_server(fleet.manager, fleet.ca.cert, "127.0.0.1", NOW + datetime.timedelta(31))


def test_keys_are_private_and_every_file_is_where_the_result_says(
    fleet: FleetCertificates,
) -> None:
    pairs = [fleet.ca, fleet.daemon_clients_ca, fleet.manager, fleet.manager_client]
    pairs += fleet.nodes.values()
    written = {p for pair in pairs for p in (pair.cert, pair.key)}
    assert written == {p for p in fleet.directory.rglob("*") if p.is_file()}
    for pair in pairs:
        assert stat.S_IMODE(pair.key.stat().st_mode) == 0o600
        assert stat.S_IMODE(pair.cert.stat().st_mode) == 0o644
    assert fleet.nodes["node-1"].cert == fleet.directory / "nodes" / "node-1.pem"


def test_an_existing_ca_is_replaced_only_with_force(fleet: FleetCertificates) -> None:
    before = fleet.ca.cert.read_bytes()
    with pytest.raises(CertificateExistsError, match=r"ca\.pem exists: pass --reuse-ca"):
        make_fleet_certificates(fleet.directory, manager_hosts=["127.0.0.1"])
    assert fleet.ca.cert.read_bytes() == before
    again = make_fleet_certificates(fleet.directory, manager_hosts=["127.0.0.1"], force=True)
    assert again.ca.cert.read_bytes() != before
    verify_server(again.manager, again.ca.cert, "127.0.0.1", datetime.datetime.now(datetime.UTC))


def test_reuse_ca_adds_nodes_signed_by_the_existing_cas(fleet: FleetCertificates) -> None:
    """``--reuse-ca``: the CA files stay as they are, the new node's certificate chains to
    the old CA and lasts no longer than it; the Manager's client certificate is re-issued
    under the old daemons' clients CA."""
    pairs = (fleet.ca, fleet.daemon_clients_ca)
    cas = {p: p.read_bytes() for pair in pairs for p in (pair.cert, pair.key)}
    later = NOW + datetime.timedelta(days=10)
    more = make_fleet_certificates(
        fleet.directory,
        manager_hosts=["127.0.0.1"],
        node_ids=["node-3"],
        node_hosts={"node-3": ["10.0.0.13"]},
        days=365,
        reuse_ca=True,
        now=later,
    )
    assert {p: p.read_bytes() for p in cas} == cas
    assert more.not_valid_after == NOW + datetime.timedelta(days=30)  # the CA's end
    assert load(more.nodes["node-3"].cert).not_valid_after_utc == more.not_valid_after
    verify_server(more.nodes["node-3"], fleet.ca.cert, "10.0.0.13", later)
    verify_client(more.manager_client, fleet.daemon_clients_ca.cert, later)
    verify_client(fleet.nodes["node-1"], more.ca.cert, later)  # the old nodes still count


def test_reuse_ca_needs_a_ca_and_excludes_force(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match=r"no CA to reuse: .*ca\.pem is missing"):
        make_fleet_certificates(tmp_path / "pki", manager_hosts=["m"], reuse_ca=True)
    with pytest.raises(CertificateError, match="give one of them"):
        make_fleet_certificates(tmp_path / "pki", manager_hosts=["m"], reuse_ca=True, force=True)
    fleet = make_fleet_certificates(tmp_path / "pki", manager_hosts=["m"])
    fleet.daemon_clients_ca.key.write_bytes(fleet.ca.key.read_bytes())
    with pytest.raises(CertificateError, match=r"daemon-clients-ca\.key is not the key of"):
        make_fleet_certificates(tmp_path / "pki", manager_hosts=["m"], reuse_ca=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"manager_hosts": []}, "no Manager host"),
        ({"manager_hosts": ["bad host"]}, "'bad host' is neither an IP address nor a DNS name"),
        ({"manager_hosts": ["10.0.0.300"]}, "'10.0.0.300' is neither"),
        ({"manager_hosts": "m.example.org"}, "expected a list of hosts"),
        ({"node_ids": ["a", "a"]}, "--node a: given twice"),
        ({"node_ids": ["-a"]}, "node id '-a': use 1 to 64 letters"),
        ({"node_ids": ["a/b"]}, "node id 'a/b'"),
        ({"node_ids": ["x" * 65]}, "node id 'xxx"),
        ({"node_ids": ["a", "b"], "node_hosts": {"a": ["b"]}}, "host 'b' is another node's id"),
        ({"node_hosts": {"c": ["h"]}}, "hosts for node 'c', which is not one of the nodes"),
        ({"days": 0}, "--days: must be 1 to 3650, got 0"),
        ({"days": 3651}, "got 3651"),
    ],
)
def test_bad_requests_are_refused_before_anything_is_written(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {"manager_hosts": ["m.example.org"], **kwargs}
    with pytest.raises(CertificateError, match=re.escape(message)):
        make_fleet_certificates(tmp_path / "pki", **arguments)  # type: ignore[arg-type]
    assert not (tmp_path / "pki").exists()


_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True)
_hosts = st.one_of(
    st.ip_addresses().map(str),
    st.from_regex(r"[a-z][a-z0-9]{0,9}(\.[a-z][a-z0-9]{0,9}){0,3}", fullmatch=True),
)


@given(_ids, st.lists(_hosts, max_size=4))
def test_parse_node_reads_what_the_option_says(node_id: str, hosts: list[str]) -> None:
    text = node_id + ("=" + ",".join(hosts) if hosts else "")
    assert parse_node(text) == (node_id, tuple(hosts))


@given(st.text(max_size=70).filter(lambda t: "=" not in t))
def test_parse_node_accepts_exactly_the_documented_ids(node_id: str) -> None:
    valid = (
        0 < len(node_id) <= 64
        and node_id[0].isascii()
        and node_id[0].isalnum()
        and all(c.isascii() and (c.isalnum() or c in "._-") for c in node_id)
    )
    if valid:
        assert parse_node(node_id) == (node_id, ())
    else:
        with pytest.raises(CertificateError, match="node id"):
            parse_node(node_id)


def test_the_command_writes_and_says_where_each_file_goes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pki"
    argv = ["certs", str(out), "--manager-host", "m.example.org", "--node", "web-1=10.0.0.5"]
    assert main(argv) == EXIT_OK
    guide = capsys.readouterr().out
    for line in (
        f"      cert_file: {out}/manager.pem",
        f"      ca_file: {out}/ca.pem",
        "      bind_node_identity: true",
        f"      cert_file: {out}/manager-client.pem",
        f"On node web-1: copy {out}/nodes/web-1.pem, {out}/nodes/web-1.key, {out}/ca.pem,"
        f" {out}/daemon-clients-ca.pem to /etc/hostvisor/tls/",
        "      ca_file: /etc/hostvisor/tls/daemon-clients-ca.pem",
        "    address: m.example.org:9090",
    ):
        assert line in guide, line
    verify_server(
        KeyPair(out / "nodes/web-1.pem", out / "nodes/web-1.key"),
        out / "ca.pem",
        "10.0.0.5",
        datetime.datetime.now(datetime.UTC),
    )

    assert main(argv) == EXIT_ERROR
    assert "ca.pem exists: pass --reuse-ca to sign with it, or --force" in capsys.readouterr().err
    assert main([*argv, "--force"]) == EXIT_OK
    assert main([*argv, "--reuse-ca", "--node", "web-2"]) == EXIT_OK
    assert (out / "nodes" / "web-2.pem").exists()
    capsys.readouterr()
    assert main(["certs", str(tmp_path / "x"), "--manager-host", "a b"]) == EXIT_USAGE
    assert "--manager-host: 'a b' is neither" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["certs", str(tmp_path / "x"), "--node", "n"])  # no --manager-host
    assert exited.value.code == EXIT_USAGE
    assert not (tmp_path / "x").exists()


def _client(fleet: FleetCertificates, pair: KeyPair) -> ClientTls:
    return ClientTls(
        server_ca=fleet.ca.cert.read_bytes(),
        cert_chain=pair.cert.read_bytes(),
        private_key=pair.key.read_bytes(),
    )


async def test_daemons_register_with_the_manager_as_their_own_node_only(
    tmp_path: Path,
) -> None:
    """A real mTLS handshake with the Manager's server certificate (verified by its IP,
    127.0.0.1) and node-1's client certificate, with bind_node_identity on: node-1 is
    served, node-2 is refused; a certificate from the daemons' clients CA is refused."""
    fleet = make_fleet_certificates(
        tmp_path / "pki", manager_hosts=["127.0.0.1"], node_ids=["node-1", "node-2"]
    )
    server = ServerTls(
        fleet.manager.cert.read_bytes(),
        fleet.manager.key.read_bytes(),
        fleet.ca.cert.read_bytes(),
    )
    node_1 = _client(fleet, fleet.nodes["node-1"])
    with sqlite_store(tmp_path) as store, trio.fail_after(SAFETY_S):
        async with connected(store, tls=server, client=node_1, bind_node_identity=True) as (
            _,
            channel,
        ):
            for method, request in calls_for("node-1"):
                assert (await channel.call(method, request)).success
            for method, request in calls_for("node-2")[:1]:
                with pytest.raises(RemoteError) as caught:
                    await channel.call(method, request)
                assert caught.value.status is StatusCode.PERMISSION_DENIED
        stranger = _client(fleet, fleet.manager_client)
        async with connected(store, tls=server, client=stranger) as (_, channel):
            method, request = calls_for("node-3")[0]
            with pytest.raises(RemoteError) as caught:
                await channel.call(method, request, timeout_s=10)
            assert caught.value.status is StatusCode.UNAVAILABLE
        assert store.get_node("node-1").status == "online"
        for absent in ("node-2", "node-3"):
            with pytest.raises(NotFoundError):
                store.get_node(absent)


async def test_the_manager_calls_a_daemon_and_other_nodes_cannot(tmp_path: Path) -> None:
    """A gRPC server with node-1's certificate and the daemons' clients CA (a daemon's
    ``daemon.tls``), reached at 127.0.0.1: the Manager's client certificate completes the
    handshake, node-2's certificate does not."""
    fleet = make_fleet_certificates(
        tmp_path / "pki",
        manager_hosts=["manager.example.org"],
        node_ids=["node-1", "node-2"],
        node_hosts={"node-1": ["127.0.0.1"]},
    )
    daemon = ServerTls(
        fleet.nodes["node-1"].cert.read_bytes(),
        fleet.nodes["node-1"].key.read_bytes(),
        fleet.daemon_clients_ca.cert.read_bytes(),
    )
    method, request = calls_for("node-1")[0]
    with sqlite_store(tmp_path) as store, trio.fail_after(SAFETY_S):
        async with connected(store, tls=daemon, client=_client(fleet, fleet.manager_client)) as (
            _,
            channel,
        ):
            assert (await channel.call(method, request)).success
        async with connected(store, tls=daemon, client=_client(fleet, fleet.nodes["node-2"])) as (
            _,
            channel,
        ):
            with pytest.raises(RemoteError) as caught:
                await channel.call(method, request, timeout_s=10)
            assert caught.value.status is StatusCode.UNAVAILABLE
