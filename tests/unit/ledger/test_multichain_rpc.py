"""The Savoir wrapper: every recorded MultiChain error becomes a typed error with a stable reason,
a wrong password and a dead node become errors of their own, and quantities stay exact.

The node is the recorded-behaviour node (tests/support/multichain_node.py) over real HTTP, so
the real Savoir client is exercised.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from decimal import Decimal

import pytest
import requests
from Savoir import Savoir

from prosum_ledger.adapters.multichain.amounts import (
    exact_decimal,
    to_display,
    to_units,
    wire_number,
)
from prosum_ledger.adapters.multichain.config import MultiChainConnection
from prosum_ledger.adapters.multichain.errors import (
    AlreadyInChain,
    InputsUnavailable,
    InsufficientFunds,
    InvalidRequest,
    MethodNotFound,
    MultiChainAuthError,
    MultiChainProtocolError,
    MultiChainRpcError,
    MultiChainUnavailable,
    NodeNotReady,
    PermissionDenied,
    TransactionNotFound,
    UnknownEntity,
    rpc_error,
)
from prosum_ledger.adapters.multichain.rpc import MultiChainRpc, OutPoint
from prosum_ledger.domain.model import ReasonCode
from tests.support.multichain_node import RecordedMultiChainNode

TX = "6e5d3a2f" * 8

# Every error in MULTICHAIN_RPC.md, in both wordings: (code, message, type, reason, asset hint).
RECORDED_ERRORS = [
    (-6, "Insufficient funds", InsufficientFunds, ReasonCode.INSUFFICIENT_ENERGY, "energy"),
    (-6, "Insufficient funds", InsufficientFunds, ReasonCode.INSUFFICIENT_ECOIN, "ecoin"),
    (-6, "Insufficient funds.", InsufficientFunds, ReasonCode.INSUFFICIENT_ENERGY, "energy"),
    (-6, "Insufficient funds.", InsufficientFunds, ReasonCode.INSUFFICIENT_ECOIN, "ecoin"),
    (
        -708,
        "Issue transaction with this name not found: nosuchasset",
        UnknownEntity,
        ReasonCode.UNKNOWN_ASSET,
        None,
    ),
    (
        -26,
        "64: Asset transfer script rejected - mismatch in input/output quantities",
        MultiChainRpcError,
        ReasonCode.CHAIN_REJECTED,
        None,
    ),
    (-715, "Missing inputs", InputsUnavailable, ReasonCode.OFFER_TAKEN, None),
    (-715, "Input already spent", InputsUnavailable, ReasonCode.OFFER_TAKEN, None),
    (
        -704,
        "Destination address doesn't have receive permission",
        PermissionDenied,
        ReasonCode.PERMISSION_DENIED,
        None,
    ),
    (
        -704,
        "from-address must have send and receive permission",
        PermissionDenied,
        ReasonCode.PERMISSION_DENIED,
        None,
    ),
    (
        -704,
        "from-address doesn't have send permission",
        PermissionDenied,
        ReasonCode.PERMISSION_DENIED,
        None,
    ),
    (
        -707,
        f"Address doesn't have send permission; Input: 0, txid: {TX}, vout: 0",
        PermissionDenied,
        ReasonCode.PERMISSION_DENIED,
        None,
    ),
    (
        -704,
        "Address of prepared output doesn't have send permission",
        PermissionDenied,
        ReasonCode.PERMISSION_DENIED,
        None,
    ),
    (
        -707,
        f"Input already spent; Input: 0, txid: {TX}, vout: 0",
        InputsUnavailable,
        ReasonCode.OFFER_TAKEN,
        None,
    ),
    (-707, "Missing inputs", InputsUnavailable, ReasonCode.OFFER_TAKEN, None),
    (-27, "transaction already in block chain", AlreadyInChain, ReasonCode.ALREADY_SETTLED, None),
    (-26, "18: bad-txns-inputs-spent", InputsUnavailable, ReasonCode.OFFER_TAKEN, None),
    (
        -707,
        "Conflicts with in-memory transactions",
        InputsUnavailable,
        ReasonCode.OFFER_TAKEN,
        None,
    ),
    (
        -1,
        "CDataStream::read() : end of data: iostream error",
        InvalidRequest,
        ReasonCode.INVALID_COMMAND,
        None,
    ),
    (-22, "TX decode failed", InvalidRequest, ReasonCode.INVALID_COMMAND, None),
    (-32601, "Method not found", MethodNotFound, ReasonCode.CHAIN_REJECTED, None),
    (
        -710,
        "No information available about transaction",
        TransactionNotFound,
        ReasonCode.INVALID_COMMAND,
        None,
    ),
]


@pytest.fixture(params=["1.0.9", "2.x"])
def node(request: pytest.FixtureRequest) -> Iterator[RecordedMultiChainNode]:
    with RecordedMultiChainNode(version=request.param) as started:
        yield started


@pytest.fixture
def rpc(node: RecordedMultiChainNode) -> Iterator[MultiChainRpc]:
    client = MultiChainRpc(node.connection())
    yield client
    client.close()


# --- the mapping -------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "message", "kind", "reason", "asset"), RECORDED_ERRORS)
def test_every_recorded_error_has_its_type_and_reason(
    code: int, message: str, kind: type[MultiChainRpcError], reason: ReasonCode, asset: str | None
) -> None:
    error = rpc_error(code, message, "somecall")

    assert type(error) is kind
    assert (error.code, error.message, error.method) == (code, message, "somecall")
    assert error.reason(asset) is reason
    ledger = error.to_ledger_error(asset=asset, trade_id="t-1")
    assert ledger.reason is reason
    assert message in ledger.chain_message
    assert ledger.trade_id == "t-1"


@pytest.mark.parametrize(("code", "message", "kind", "reason", "asset"), RECORDED_ERRORS)
def test_every_recorded_error_arrives_typed_over_http(
    rpc: MultiChainRpc,
    node: RecordedMultiChainNode,
    code: int,
    message: str,
    kind: type[MultiChainRpcError],
    reason: ReasonCode,
    asset: str | None,
) -> None:
    # Savoir returns this envelope from an HTTP 500 instead of raising; the wrapper raises.
    node.fail_next("getinfo", code, message)

    with pytest.raises(kind) as caught:
        rpc.call("getinfo")

    assert (caught.value.code, caught.value.message) == (code, message)
    assert caught.value.reason(asset) is reason
    assert rpc.get_info().chain_name == node.chain_name  # the next call is unaffected


def test_insufficient_funds_without_an_asset_does_not_guess() -> None:
    assert rpc_error(-6, "Insufficient funds", "x").reason() is ReasonCode.CHAIN_REJECTED


def test_unrecorded_codes_fall_back_to_their_meaning() -> None:
    assert type(rpc_error(-28, "Loading block index...", "getinfo")) is NodeNotReady
    assert rpc_error(-28, "Loading block index...", "getinfo").reason() is (
        ReasonCode.CHAIN_UNAVAILABLE
    )
    assert type(rpc_error(-25, "Missing inputs", "sendrawtransaction")) is InputsUnavailable
    assert type(rpc_error(-9999, "something new", "x")) is MultiChainRpcError
    assert rpc_error(-9999, "something new", "x").reason() is ReasonCode.CHAIN_REJECTED


# --- what the recorded node answers, through the wrapper -------------------------------


def _funded(rpc: MultiChainRpc, node: RecordedMultiChainNode) -> tuple[str, str]:
    """The recorded scenario's steps 1 to 4: assets, a producer with 500 energy, a consumer
    with 1,000,000 ecoin."""
    admin = rpc.list_addresses()[0]
    rpc.issue(admin, "energy", open=True, quantity=Decimal(1000), units=Decimal("0.001"))
    rpc.issue(admin, "ecoin", open=True, quantity=Decimal(100000), units=Decimal(1))
    producer, consumer = rpc.get_new_address(), rpc.get_new_address()
    rpc.grant([producer], "connect,send,receive")
    rpc.grant([producer], "energy.issue")
    rpc.grant([consumer], "connect,send,receive")
    rpc.issue_more_from(producer, producer, "energy", Decimal(500), {})
    rpc.call("issuemore", consumer, "ecoin", 1000000)
    node.mine()
    return producer, consumer


def test_the_recorded_exchange_scenario(rpc: MultiChainRpc, node: RecordedMultiChainNode) -> None:
    producer, consumer = _funded(rpc, node)
    issuers = rpc.list_permissions("energy.issue", [producer])
    assert [(e.address, e.type, e.entity) for e in issuers] == [(producer, "issue", "energy")]

    for _ in range(5):
        offer = rpc.prepare_lock_unspent_from(producer, {"energy": Decimal(1)})
        offer_hex = rpc.create_raw_exchange(offer, {"ecoin": Decimal(1000)})
        decoded = rpc.decode_raw_exchange(offer_hex)
        assert decoded.offer == {"energy": Decimal(1)}
        assert decoded.ask == {"ecoin": Decimal(1000)}
        assert decoded.can_complete
        assert not decoded.complete
        bid = rpc.prepare_lock_unspent_from(consumer, {"ecoin": Decimal(1000)})
        taken = rpc.append_raw_exchange(offer_hex, bid, {"energy": Decimal(1)})
        assert taken.complete
        rpc.send_raw_transaction(taken.hex)
    node.mine()

    # Recorded: ``[{"name": "energy", "qty": 495.0, ...}]`` (1.0.9) or ``495`` (2.x).
    raw = rpc.call("getaddressbalances", producer, 0)
    assert isinstance(raw, list)
    energy = next(entry for entry in raw if entry["name"] == "energy")
    if node.version == "1.0.9":
        assert type(energy["qty"]) is float
        assert energy["qty"] == 495.0
    else:
        assert type(energy["qty"]) is int
        assert energy["qty"] == 495
    assert rpc.get_address_balances(producer, minconf=0, include_locked=False) == {
        "energy": Decimal(495),
        "ecoin": Decimal(5000),
    }
    assert rpc.get_address_balances(consumer, minconf=1, include_locked=False) == {
        "energy": Decimal(5),
        "ecoin": Decimal(995000),
    }


def test_recorded_exchange_failures(rpc: MultiChainRpc, node: RecordedMultiChainNode) -> None:
    producer, consumer = _funded(rpc, node)
    offer = rpc.prepare_lock_unspent_from(producer, {"energy": Decimal(1)})
    offer_hex = rpc.create_raw_exchange(offer, {"ecoin": Decimal(1000)})

    # Consumer locks less than asked: appended but incomplete, and rejected when sent.
    short = rpc.prepare_lock_unspent_from(consumer, {"ecoin": Decimal(900)})
    partial = rpc.append_raw_exchange(offer_hex, short, {"energy": Decimal(1)})
    assert not partial.complete
    with pytest.raises(MultiChainRpcError, match="mismatch in input/output quantities") as bad:
        rpc.send_raw_transaction(partial.hex)
    assert bad.value.code == -26

    # Two takers: the second gets bad-txns-inputs-spent.
    first = rpc.append_raw_exchange(
        offer_hex,
        rpc.prepare_lock_unspent_from(consumer, {"ecoin": Decimal(1000)}),
        {"energy": Decimal(1)},
    )
    second = rpc.append_raw_exchange(
        offer_hex,
        rpc.prepare_lock_unspent_from(consumer, {"ecoin": Decimal(1000)}),
        {"energy": Decimal(1)},
    )
    rpc.send_raw_transaction(first.hex)
    with pytest.raises(InputsUnavailable, match="bad-txns-inputs-spent"):
        rpc.send_raw_transaction(second.hex)
    node.mine()

    # The offer taken and confirmed: a later taker is told so, in its version's words.
    later = rpc.prepare_lock_unspent_from(consumer, {"ecoin": Decimal(1000)})
    with pytest.raises(InputsUnavailable) as taken:
        rpc.append_raw_exchange(offer_hex, later, {"energy": Decimal(1)})
    assert taken.value.code == -707
    expected = "Input already spent" if node.version == "1.0.9" else "Missing inputs"
    assert taken.value.message.startswith(expected)
    # Re-sending the completed transaction.
    with pytest.raises(AlreadyInChain):
        rpc.send_raw_transaction(first.hex)

    # An offer withdrawn by its maker, the withdrawal not yet in a block.
    withdrawn = rpc.create_raw_exchange(
        rpc.prepare_lock_unspent_from(producer, {"energy": Decimal(1)}), {"ecoin": Decimal(1000)}
    )
    with node.paused_mining():
        rpc.call("disablerawtransaction", withdrawn)
        with pytest.raises(InputsUnavailable, match="Conflicts with in-memory transactions"):
            rpc.decode_raw_exchange(withdrawn)


def test_recorded_permission_and_lookup_failures(
    rpc: MultiChainRpc, node: RecordedMultiChainNode
) -> None:
    producer, consumer = _funded(rpc, node)
    stranger = rpc.get_new_address()

    with pytest.raises(PermissionDenied, match="from-address must have send and receive"):
        rpc.prepare_lock_unspent_from(stranger, {"ecoin": Decimal(1)})
    with pytest.raises(PermissionDenied, match="receive permission"):
        rpc.issue_more_from(producer, stranger, "energy", Decimal(1), {})
    with pytest.raises(UnknownEntity, match="nosuchasset"):
        rpc.prepare_lock_unspent_from(consumer, {"nosuchasset": Decimal(1)})
    with pytest.raises(InsufficientFunds) as poor:
        rpc.prepare_lock_unspent_from(producer, {"ecoin": Decimal(1)})
    assert poor.value.message == (
        "Insufficient funds" if node.version == "1.0.9" else "Insufficient funds."
    )
    with pytest.raises(InputsUnavailable, match="Missing inputs") as unknown:
        rpc.create_raw_exchange(OutPoint(TX, 0), {"ecoin": Decimal(1)})
    assert unknown.value.code == -715
    with pytest.raises(TransactionNotFound):
        rpc.get_raw_transaction(TX)
    with pytest.raises(InvalidRequest) as bad_hex:
        rpc.decode_raw_exchange("00ff")
    assert (bad_hex.value.code, bad_hex.value.message) == (-22, "TX decode failed")
    with pytest.raises(InvalidRequest) as truncated:
        rpc.append_raw_exchange("00ff", OutPoint(TX, 0), {"energy": Decimal(1)})
    assert truncated.value.code == -1

    # The offerer's send permission revoked after offering.
    offer = rpc.prepare_lock_unspent_from(producer, {"energy": Decimal(1)})
    offer_hex = rpc.create_raw_exchange(offer, {"ecoin": Decimal(1000)})
    bid = rpc.prepare_lock_unspent_from(consumer, {"ecoin": Decimal(1000)})
    rpc.revoke([producer], "send")
    with pytest.raises(
        PermissionDenied, match="Address doesn't have send permission; Input: 0"
    ) as revoked:
        rpc.append_raw_exchange(offer_hex, bid, {"energy": Decimal(1)})
    assert revoked.value.code == -707


def test_unknown_method_is_typed(rpc: MultiChainRpc) -> None:
    with pytest.raises(MethodNotFound) as caught:
        rpc.call("nosuchmethod")
    assert caught.value.code == -32601


def test_quantities_come_back_exact(rpc: MultiChainRpc, node: RecordedMultiChainNode) -> None:
    producer, _consumer = _funded(rpc, node)
    rpc.issue_more_from(producer, producer, "energy", Decimal("0.001"), {})
    rpc.issue_more_from(producer, producer, "energy", Decimal("1234567.891"), {})
    node.mine()

    balances = rpc.get_address_balances(producer, minconf=1, include_locked=False)

    assert balances["energy"] == Decimal("1235067.892")
    assert to_units(balances["energy"], 3, "energy") == 1_235_067_892


# --- the client's own quirks ---------------------------------------------------------------


def test_wrong_password_is_an_authentication_error(node: RecordedMultiChainNode) -> None:
    # Savoir itself trips over the HTML 401 page:
    raw = Savoir(node.user, "wrong", "127.0.0.1", str(node.port), node.chain_name)
    with pytest.raises(requests.exceptions.JSONDecodeError):
        raw.getinfo()

    rpc = MultiChainRpc(node.connection(password="wrong"))
    with pytest.raises(MultiChainAuthError) as caught:
        rpc.get_info()
    assert caught.value.reason() is ReasonCode.CHAIN_UNAVAILABLE
    assert "wrong" not in str(caught.value)


def test_savoir_returns_error_envelopes_and_wants_a_string_port(
    node: RecordedMultiChainNode,
) -> None:
    raw = Savoir(node.user, node.password, "127.0.0.1", str(node.port), node.chain_name)
    envelope = raw.nosuchmethod()
    assert envelope["result"] is None
    assert envelope["error"] == {"code": -32601, "message": "Method not found"}

    with pytest.raises(TypeError, match="expected str instance, int found"):
        Savoir(node.user, node.password, "127.0.0.1", node.port, node.chain_name).getinfo()

    # The wrapper takes the port as an int as well as a string.
    for port in (node.port, str(node.port)):
        rpc = MultiChainRpc(node.connection(port=port))
        assert rpc.get_info().chain_name == node.chain_name
        assert rpc.connection.port == node.port


def test_node_down_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rpc = MultiChainRpc(
        MultiChainConnection("127.0.0.1", port, "u", "p", "prosum-test", timeout_s=2)
    )

    with pytest.raises(MultiChainUnavailable) as caught:
        rpc.get_block_count()

    assert not caught.value.delivered  # nothing reached a node: safe to retry
    assert caught.value.reason() is ReasonCode.CHAIN_UNAVAILABLE


def test_a_node_that_never_answers_times_out() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])  # and never answer
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        rpc = MultiChainRpc(
            MultiChainConnection(
                "127.0.0.1", listener.getsockname()[1], "u", "p", "prosum-test", timeout_s=0.3
            )
        )
        with pytest.raises(MultiChainUnavailable) as caught:
            rpc.call("sendrawtransaction", "00")
        # The request went out: whether it happened is unknown, so it must be reconciled.
        assert caught.value.delivered
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def test_calls_from_many_threads_are_serialised(rpc: MultiChainRpc) -> None:
    addresses: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(20):
            address = rpc.get_new_address()
            with lock:
                addresses.append(address)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(set(addresses)) == 160


def test_plain_savoir_still_works_beside_the_wrapper(node: RecordedMultiChainNode) -> None:
    MultiChainRpc(node.connection())  # installs the transport
    raw = Savoir(node.user, node.password, "127.0.0.1", str(node.port), node.chain_name)
    assert raw.getblockcount() == node.height


def test_a_non_json_error_body_is_a_protocol_error() -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Broken(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(502)
            self.send_header("Content-Length", "7")
            self.end_headers()
            self.wfile.write(b"gateway")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        rpc = MultiChainRpc(
            MultiChainConnection("127.0.0.1", server.server_address[1], "u", "p", "c")
        )
        with pytest.raises(MultiChainProtocolError, match="HTTP 502"):
            rpc.get_info()
    finally:
        server.shutdown()
        server.server_close()


# --- configuration and amounts ---------------------------------------------------------


def test_connection_config() -> None:
    conn = MultiChainConnection("h", "6824", "u", "secret", "chain")
    assert conn.port == 6824
    assert conn.rpc_port == "6824"
    assert "secret" not in repr(conn)
    with pytest.raises(ValueError, match="port"):
        MultiChainConnection("h", "http", "u", "p", "chain")
    with pytest.raises(ValueError, match="out of range"):
        MultiChainConnection("h", 70000, "u", "p", "chain")
    env = {
        "PROSUM_MULTICHAIN_HOST": "10.0.0.5",
        "PROSUM_MULTICHAIN_PORT": "4410",
        "PROSUM_MULTICHAIN_USER": "multichainrpc",
        "PROSUM_MULTICHAIN_PASSWORD": "pw",
        "PROSUM_MULTICHAIN_CHAIN": "energybc",
    }
    from_env = MultiChainConnection.from_env(env)
    assert (from_env.host, from_env.port, from_env.chain_name) == ("10.0.0.5", 4410, "energybc")
    with pytest.raises(ValueError, match="PROSUM_MULTICHAIN_PASSWORD"):
        MultiChainConnection.from_env({k: v for k, v in env.items() if not k.endswith("PASSWORD")})


@pytest.mark.parametrize(
    ("printed", "decimals", "units"),
    [
        (495.0, 3, 495_000),  # 1.0.9
        (495, 3, 495_000),  # 2.x
        (0.001, 3, 1),
        (1.5, 3, 1_500),
        (1234567.891, 3, 1_234_567_891),
        (1000000.0, 0, 1_000_000),
        (123456789012.345, 3, 123_456_789_012_345),
    ],
)
def test_printed_quantities_scale_exactly(printed: float | int, decimals: int, units: int) -> None:
    assert to_units(exact_decimal(printed, "qty"), decimals, "qty") == units


def test_quantities_that_cannot_be_exact_are_refused() -> None:
    with pytest.raises(MultiChainProtocolError, match="more digits"):
        exact_decimal(0.1 + 0.2, "qty")  # 0.30000000000000004
    with pytest.raises(MultiChainProtocolError, match="finer"):
        to_units(Decimal("0.0005"), 3, "energy")
    with pytest.raises(MultiChainProtocolError, match="number"):
        exact_decimal(True, "qty")
    with pytest.raises(MultiChainProtocolError):
        exact_decimal(float("nan"), "qty")


@pytest.mark.parametrize("units", [1, 999, 1_000, 1_500, 123_456_789, 999_999_999_999_999])
def test_amounts_go_out_as_exact_json_numbers(units: int) -> None:
    quantity = to_display(units, 3)
    number = wire_number(quantity)
    assert Decimal(repr(number)) == quantity
    assert to_units(exact_decimal(number, "qty"), 3, "qty") == units


def test_amounts_too_precise_for_json_are_refused() -> None:
    with pytest.raises(ValueError, match="exact JSON number"):
        wire_number(to_display(12_345_678_901_234_567, 3))
    with pytest.raises(TypeError):
        to_display(1.5, 3)  # type: ignore[arg-type]
