"""Ingestion on a real store (SQLite and PostgreSQL): a producer's day becomes exactly its net
surplus, minted once with its evidence; repeats, late readings, gaps, conflicts, revoked and
unknown devices, and two writers at once."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Sequence

import pytest

from prosum_metering.adapters.signatures import PooledVerifier
from prosum_metering.adapters.store import CODEC, read_view, unit_of_work
from prosum_metering.adapters.tables import intervals, readings
from prosum_metering.application.access import Requester
from prosum_metering.application.ingest import IngestService, Submitter
from prosum_metering.domain.model import Decision, ReadingsRecorded
from prosum_metering.domain.readings import Reason
from prosum_platform.domain import DomainRuleViolation
from tests.integration.metering.conftest import DAY_START
from tests.integration.metering.harness import (
    CountingVerifier,
    Metering,
    by_status,
    ledger_outcome,
    reasons,
)
from tests.unit.metering.meters import (
    INTERVAL,
    Meter,
    activated,
    day_readings,
    device,
    net_surplus,
    onboarding,
    registered,
    revoked_device,
    signed_bytes,
    solar_day,
    utc,
)


def evidence_of(a: dict[str, object], b: dict[str, object], meter: Meter) -> str:
    def leaf(r: dict[str, object]) -> bytes:
        signature = base64.urlsafe_b64decode(str(r["signature"]) + "==")
        message = signed_bytes(
            meter.device_id,
            meter.metering_point,
            int(str(r["_end"])),
            int(str(r["import_wh"])),
            int(str(r["export_wh"])),
        )
        return hashlib.sha256(b"\x00" + message + signature).digest()

    return hashlib.sha256(b"\x02" + leaf(a) + leaf(b)).hexdigest()


def test_a_day_in_one_batch_mints_exactly_the_net_surplus_once(
    metering: Metering, producer: Meter
) -> None:
    metering.deliver(*onboarding(producer))
    day = list(day_readings(producer, DAY_START))
    result = metering.submit(producer, day)
    assert by_status(result) == {"accepted": list(range(97))}
    assert result.intervals_measured == 96

    expected = net_surplus(solar_day(DAY_START))
    mints = metering.mints()
    assert len(mints) == len(expected) == result.mints_requested
    assert sum(m["amount_wh"] for m in mints) == sum(expected.values())
    assert {m["command_id"] for m in mints} == {
        f"mint:MP-P1:{_compact(start)}" for start in expected
    }
    by_start = {m["interval_start"]: m for m in mints}
    raw = solar_day(DAY_START)
    for k, (start, _imp, _exp) in enumerate(raw[:-1]):
        if start not in expected:
            continue
        mint = by_start[_iso(start)]
        assert mint["participant_id"] == "producer-1"
        assert mint["amount_wh"] == expected[start]
        assert mint["evidence_hash"] == evidence_of(
            {**day[k], "_end": start}, {**day[k + 1], "_end": start + INTERVAL}, producer
        )

    measured = metering.published("metering.intervals_measured")
    intervals = [i for e in measured for i in e.data["intervals"]]
    assert len(intervals) == 96
    assert sum(i["consumption_wh"] for i in intervals) + sum(i["surplus_wh"] for i in intervals) > 0
    imports = [i["import_wh"] for i in intervals]
    assert sum(imports) == raw[-1][1] - raw[0][1], "import per interval recorded for settlement"

    metering.new_published()
    checked = metering.verifier.checked
    again = metering.submit(producer, day)
    assert by_status(again) == {"duplicate": list(range(97))}
    assert metering.verifier.checked == checked, "the same signed bytes are not checked twice"
    assert [e.type for e in metering.new_published()] == ["metering.readings_received"]
    assert len(metering.mints()) == len(expected), "sending the day again mints nothing"


def test_a_day_sent_reading_by_reading_mints_the_same(metering: Metering, producer: Meter) -> None:
    metering.deliver(*onboarding(producer))
    for reading in day_readings(producer, DAY_START):
        assert by_status(metering.submit(producer, [reading])) == {"accepted": [0]}
    expected = net_surplus(solar_day(DAY_START))
    assert sorted(m["amount_wh"] for m in metering.mints()) == sorted(expected.values())
    for reading in day_readings(producer, DAY_START):
        assert by_status(metering.submit(producer, [reading])) == {"duplicate": [0]}
    assert len(metering.mints()) == len(expected)


def test_a_gap_is_reported_and_minted_only_once_late_readings_fill_it(
    metering: Metering, producer: Meter
) -> None:
    metering.deliver(*onboarding(producer))
    day = list(day_readings(producer, DAY_START))
    noon = 48
    first = metering.submit(producer, day[: noon - 2] + day[noon + 1 : noon + 4])
    assert len(by_status(first)["accepted"]) == noon - 2 + 3
    [gap] = metering.new_published("metering.gap_detected")
    assert gap.data["gap_start"] == _iso(DAY_START + (noon - 3) * INTERVAL)
    assert gap.data["gap_end"] == _iso(DAY_START + (noon + 1) * INTERVAL)
    assert gap.data["unmeasured_intervals"] == 4
    raw = solar_day(DAY_START)
    assert gap.data["export_wh"] == raw[noon + 1][2] - raw[noon - 3][2]
    minted_starts = {m["interval_start"] for m in metering.mints()}
    assert _iso(DAY_START + (noon - 1) * INTERVAL) not in minted_starts, "nothing invented"

    late = metering.submit(producer, [day[noon - 1]])
    assert by_status(late) == {"accepted": [0]}
    split = [e for e in metering.new_published() if e.type.startswith("metering.gap")]
    assert [(e.type, e.data["unmeasured_intervals"]) for e in split] == [
        ("metering.gap_closed", 4),
        ("metering.gap_detected", 2),
        ("metering.gap_detected", 2),
    ]
    rest = metering.submit(producer, day[noon - 2 : noon + 1])
    assert by_status(rest) == {"accepted": [0, 2], "duplicate": [1]}
    closed = metering.new_published("metering.gap_closed")
    assert len(closed) == 2
    expected = net_surplus(raw[: noon + 4])
    assert sorted((m["interval_start"], m["amount_wh"]) for m in metering.mints()) == sorted(
        (_iso(s), v) for s, v in expected.items()
    )
    gaps = metering.data.gaps(_ops(), producer.metering_point)["gaps"]
    assert {g["status"] for g in gaps} == {"closed"}


def test_registers_going_backwards_are_refused_also_for_late_readings(
    metering: Metering, producer: Meter
) -> None:
    metering.deliver(*onboarding(producer))
    t = DAY_START
    metering.submit(
        producer,
        [producer.reading(t, 1_000, 1_000), producer.reading(t + 2 * INTERVAL, 1_200, 1_500)],
    )
    refused = metering.submit(
        producer,
        [
            producer.reading(t + 3 * INTERVAL, 1_199, 1_600),  # import went back
            producer.reading(t + INTERVAL, 1_300, 1_100),  # late, above the later reading
            producer.reading(t + INTERVAL, 999, 1_100),  # late, below the earlier reading
        ],
    )
    assert reasons(refused) == {
        0: "register_backwards",
        1: "register_backwards",
        2: "register_backwards",
    }
    rejected = metering.published("metering.readings_rejected")[-1].data["rejections"]
    assert [(r["position"], r["reason"], r["interval_end"]) for r in rejected] == [
        (0, "register_backwards", _iso(t + 3 * INTERVAL)),
        (1, "register_backwards", _iso(t + INTERVAL)),
        (2, "register_backwards", _iso(t + INTERVAL)),
    ]


def test_implausible_energy_for_the_rating_is_refused(metering: Metering, producer: Meter) -> None:
    metering.deliver(*onboarding(producer))  # 20 kW: at most 5,000 Wh per interval
    t = DAY_START
    result = metering.submit(
        producer,
        [
            producer.reading(t, 0, 0),
            producer.reading(t + INTERVAL, 0, 5_001),
            producer.reading(t + INTERVAL, 0, 5_000),
        ],
    )
    assert reasons(result) == {1: "implausible"}
    assert by_status(result)["accepted"] == [0, 2]


def test_a_conflicting_duplicate_is_refused_reported_once_and_kept_for_ops(
    metering: Metering, producer: Meter
) -> None:
    metering.deliver(*onboarding(producer))
    t = DAY_START
    metering.submit(producer, [producer.reading(t, 0, 0), producer.reading(t + INTERVAL, 10, 900)])
    metering.new_published()
    other = producer.reading(t + INTERVAL, 10, 950)
    first = metering.submit(producer, [other])
    second = metering.submit(producer, [other])
    assert reasons(first) == reasons(second) == {0: "conflicting_duplicate"}
    assert first.results[0].conflict_id == second.results[0].conflict_id
    [conflict] = metering.published("metering.reading_conflict_detected")
    assert conflict.data["submitted_export_wh"] == 950
    [listed] = metering.data.conflicts("open")["conflicts"]
    assert listed["conflict_id"] == first.results[0].conflict_id


def test_resolving_a_conflict_adjusts_the_minted_interval_and_never_mints_again(
    metering: Metering, producer: Meter
) -> None:
    metering.deliver(*onboarding(producer))
    t = DAY_START
    metering.submit(
        producer,
        [
            producer.reading(t, 0, 0),
            producer.reading(t + INTERVAL, 10, 900),
            producer.reading(t + 2 * INTERVAL, 20, 1_500),
        ],
    )
    [m1, m2] = metering.mints()
    assert (m1["amount_wh"], m2["amount_wh"]) == (890, 590)
    result = metering.submit(producer, [producer.reading(t + INTERVAL, 10, 1_000)])
    conflict_id = result.results[0].conflict_id
    assert conflict_id is not None

    resolution = metering.corrections.resolve(
        conflict_id, _take(), "ops:alice", "meter data hub verified"
    )
    adjusted = metering.published("metering.interval_adjusted")
    assert [(a.data["interval_start"], a.data["adjustment_wh"]) for a in adjusted] == [
        (_iso(t), 100),
        (_iso(t + INTERVAL), -100),
    ]
    assert adjusted[0].data["previous"]["evidence_hash"] == m1["evidence_hash"]
    assert adjusted[0].data["minted_wh"] == 890
    assert len(resolution.adjustments) == 2
    assert len(metering.mints()) == 2, "a correction is an adjustment, never a second mint"
    intervals = metering.data.intervals(_ops(), producer.metering_point, t, t + 2 * INTERVAL)[
        "intervals"
    ]
    assert [(i["surplus_wh"], i["adjustment_wh"], i["mint"]["amount_wh"]) for i in intervals] == [
        (990, 100, 890),
        (490, -100, 590),
    ]
    # The evidence behind the mint stays servable: the superseded reading is kept.
    old = metering.data.evidence(_ops(), m1["evidence_hash"])
    assert old["current"] is False
    assert [r["export_wh"] for r in old["readings"]] == [0, 900]
    assert old["readings"][1]["superseded"] is True
    [resolved] = metering.published("metering.reading_conflict_resolved")
    assert resolved.data["decision"] == "take_submitted"


def test_a_participant_not_yet_active_gets_its_surplus_minted_once_it_is(
    metering: Metering, producer: Meter
) -> None:
    metering.deliver(registered(producer.participant_id, producer.metering_point), device(producer))
    t = DAY_START
    pending = Submitter(producer.participant_id, None, "th")
    metering.submit(pending, [producer.reading(t, 0, 0), producer.reading(t + INTERVAL, 0, 700)])
    assert metering.mints() == []
    [measured] = metering.published("metering.intervals_measured")
    assert measured.data["intervals"][0]["mint_status"] == "deferred"
    activation = activated(producer.participant_id)
    assert metering.deliver(activation, activation) == [True, False]
    [mint] = metering.mints()
    assert (mint["command_id"], mint["amount_wh"]) == (f"mint:MP-P1:{_compact(t)}", 700)
    metering.deliver(activated(producer.participant_id))  # reinstated again: nothing left
    assert len(metering.mints()) == 1


def test_a_consumer_role_is_measured_but_not_minted(metering: Metering) -> None:
    household = Meter("meter-c1", "MP-C1", "consumer-1")
    metering.deliver(*onboarding(household, role="consumer"))
    t = DAY_START
    metering.submit(
        household, [household.reading(t, 0, 0), household.reading(t + INTERVAL, 0, 300)]
    )
    assert metering.mints() == []
    [measured] = metering.published("metering.intervals_measured")
    assert measured.data["intervals"][0]["mint_status"] == "not_eligible"


def test_unknown_revoked_and_foreign_devices_and_bad_signatures_are_refused(
    metering: Metering, producer: Meter
) -> None:
    neighbour = Meter("meter-n1", "MP-N1", "neighbour-1")
    metering.deliver(*onboarding(producer), *onboarding(neighbour))
    t = DAY_START
    stranger = Meter("meter-x", "MP-P1", "producer-1")  # never registered
    forged = producer.reading(t, 0, 0) | {"import_wh": 1}
    result = metering.submit(
        producer,
        [
            stranger.reading(t, 0, 0),
            producer.reading(t, 0, 0, metering_point="MP-OTHER"),
            neighbour.reading(t, 0, 0),
            forged,
            producer.reading(t, 0, 0),
        ],
    )
    assert reasons(result) == {
        0: Reason.UNKNOWN_DEVICE,
        1: Reason.WRONG_METERING_POINT,
        2: Reason.NOT_COVERED,
        3: Reason.SIGNATURE_INVALID,
    }
    assert by_status(result)["accepted"] == [4]
    metering.deliver(revoked_device(producer))
    revoked = metering.submit(producer, [producer.reading(t + INTERVAL, 0, 10)])
    assert reasons(revoked) == {0: Reason.DEVICE_REVOKED}
    # A new device for the same metering point continues its series.
    replacement = Meter("meter-p2", "MP-P1", "producer-1")
    metering.deliver(device(replacement))
    assert by_status(metering.submit(replacement, [replacement.reading(t + INTERVAL, 0, 10)])) == {
        "accepted": [0]
    }
    assert len(metering.mints()) == 1


def test_two_writers_at_once_store_each_reading_once_and_mint_once(
    metering: Metering, producer: Meter
) -> None:
    metering.deliver(*onboarding(producer))
    day = list(day_readings(producer, DAY_START))
    results = []

    def send(part: list[dict[str, object]]) -> None:
        results.append(metering.submit(producer, part))

    writers = [threading.Thread(target=send, args=(day,)) for _ in range(2)]
    writers += [threading.Thread(target=send, args=(day[::2],))]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    accepted = sum(len(by_status(r).get("accepted", [])) for r in results)
    assert accepted == 97
    assert all("rejected" not in by_status(r) for r in results)
    expected = net_surplus(solar_day(DAY_START))
    mints = metering.mints()
    assert len(mints) == len({m["command_id"] for m in mints}) == len(expected)
    assert sum(m["amount_wh"] for m in mints) == sum(expected.values())


def test_mint_outcomes_are_recorded_once(metering: Metering, producer: Meter) -> None:
    metering.deliver(*onboarding(producer))
    t = DAY_START
    metering.submit(producer, [producer.reading(t, 0, 0), producer.reading(t + INTERVAL, 0, 500)])
    [mint] = metering.mints()
    confirmed = ledger_outcome(mint["command_id"], participant_id="producer-1")
    assert metering.deliver(confirmed, confirmed) == [True, False]
    late_failure = ledger_outcome(mint["command_id"], confirmed=False)
    metering.deliver(late_failure, ledger_outcome("mint:someone-else:20260528T0000Z"))
    [interval] = metering.data.intervals(_ops(), producer.metering_point, t, t + INTERVAL)[
        "intervals"
    ]
    assert interval["mint"]["status"] == "confirmed"
    assert (interval["mint"]["tx_id"], interval["mint"]["block"]) == ("0x" + "ab" * 32, 42)


def _iso(epoch: int) -> str:
    return utc(epoch)


def _compact(epoch: int) -> str:
    return _iso(epoch).replace("-", "").replace(":", "")[:13] + "Z"


def _ops() -> Requester:
    return Requester("ops:test", ops=True)


def _take() -> Decision:
    return Decision.TAKE_SUBMITTED


def test_the_submission_event_holds_what_was_accepted_and_reads_back(
    metering: Metering, producer: Meter
) -> None:
    metering.deliver(*onboarding(producer))
    t = DAY_START
    good = [producer.reading(t, 0, 0), producer.reading(t + INTERVAL, 5, 400)]
    result = metering.submit(producer, [*good, producer.reading(t, 1, 0) | {"signature": "x"}])
    [stored] = metering.store.load(f"metering-submission-{result.submission_id}")
    event = CODEC.decode(stored.event_type, stored.schema_version, stored.data)
    assert isinstance(event, ReadingsRecorded)
    assert [r["reading_hash"] for r in event.readings] == [
        r.reading_hash for r in result.results[:2]
    ]
    assert event.readings[1]["export_wh"] == 400
    assert [(r["position"], r["reason"]) for r in event.refusals] == [(2, "malformed")]
    assert [i["surplus_wh"] for i in event.intervals] == [395]
    assert event.received_at.tzinfo is not None


def test_a_device_given_a_new_key_is_verified_with_it_at_once(
    metering: Metering, producer: Meter
) -> None:
    metering.deliver(*onboarding(producer))
    t = DAY_START
    assert by_status(metering.submit(producer, [producer.reading(t, 0, 0)])) == {"accepted": [0]}
    rekeyed = Meter(producer.device_id, producer.metering_point, producer.participant_id)
    metering.deliver(device(rekeyed))  # identity registered the device again, with a new key
    old_key = metering.submit(producer, [producer.reading(t + INTERVAL, 0, 10)])
    assert reasons(old_key) == {0: Reason.SIGNATURE_INVALID}
    new_key = metering.submit(rekeyed, [rekeyed.reading(t + INTERVAL, 0, 10)])
    assert by_status(new_key) == {"accepted": [0]}


def test_two_conflicts_for_one_reading_cannot_both_replace_it(
    metering: Metering, producer: Meter
) -> None:
    metering.deliver(*onboarding(producer))
    t = DAY_START
    metering.submit(producer, [producer.reading(t, 0, 0), producer.reading(t + INTERVAL, 0, 100)])
    first = metering.submit(producer, [producer.reading(t + INTERVAL, 0, 110)]).results[0]
    second = metering.submit(producer, [producer.reading(t + INTERVAL, 0, 120)]).results[0]
    assert first.conflict_id and second.conflict_id and first.conflict_id != second.conflict_id
    metering.corrections.resolve(first.conflict_id, _take(), "ops:alice", "")
    with pytest.raises(DomainRuleViolation) as refused:
        metering.corrections.resolve(second.conflict_id, _take(), "ops:bob", "")
    assert refused.value.reason == "held_reading_superseded"
    metering.corrections.resolve(second.conflict_id, Decision.KEEP_HELD, "ops:bob", "")
    [interval] = metering.data.intervals(_ops(), producer.metering_point, t, t + INTERVAL)[
        "intervals"
    ]
    assert interval["export_wh"] == 110


def test_a_forged_reading_in_a_batch_checked_by_worker_processes_is_refused_alone(
    metering: Metering, producer: Meter
) -> None:
    """Signatures are checked by worker processes while the transaction works out and writes
    the batch; a forged reading found before the commit rolls it back and the batch is
    written again without it: its neighbours are kept, nothing of it is stored or published,
    and the two intervals around it are reported as a gap, not invented."""
    pool = PooledVerifier(1, inline_below=1, chunk=16)
    metering.ingest = IngestService(
        unit_of_work(metering.store), read_view(metering.store), pool, metering.clock
    )
    try:
        metering.deliver(*onboarding(producer))
        day = list(day_readings(producer, DAY_START))
        day[40] = day[40] | {"export_wh": int(day[40]["export_wh"]) + 1}  # signed bytes differ
        result = metering.submit(producer, day)
    finally:
        pool.close()
    assert reasons(result) == {40: Reason.SIGNATURE_INVALID}
    assert len(by_status(result)["accepted"]) == 96
    with metering.engine.connect() as conn:
        stored = conn.execute(readings.select()).all()
        ends = {row.interval_end for row in stored}
        minted_starts = {row.interval_start for row in conn.execute(intervals.select()).all()}
    assert len(stored) == 96
    forged_end = DAY_START + 40 * INTERVAL
    assert forged_end not in ends
    # 94 intervals measured; the two around the forged reading are a gap.
    assert len(minted_starts) == 94
    assert forged_end - INTERVAL not in minted_starts
    assert forged_end not in minted_starts
    [gap] = metering.published("metering.gap_detected")
    assert (gap.data["gap_start"], gap.data["gap_end"]) == (
        utc(forged_end - INTERVAL),
        utc(forged_end + INTERVAL),
    )
    assert gap.data["unmeasured_intervals"] == 2
    [recorded] = metering.published("metering.readings_received")
    assert recorded.data["accepted"] == 96
    assert recorded.data["rejected"] == 1
    [refused] = metering.published("metering.readings_rejected")
    assert [r["position"] for r in refused.data["rejections"]] == [40]


class _SlowChecks:
    """Signature checks that are not done when the transaction is ready to commit (workers
    busy with other submissions): the real outcomes, but only once waited for without a
    time limit."""

    def __init__(self, outcomes: list[bool]) -> None:
        self.outcomes = outcomes
        self.timed_out = 0
        self.done = False

    def result(self, timeout: float | None = None) -> list[bool]:
        if timeout is not None and not self.done:
            self.timed_out += 1
            raise TimeoutError
        self.done = True
        return self.outcomes


class _SlowVerifier(CountingVerifier):
    def __init__(self) -> None:
        super().__init__()
        self.pending: list[_SlowChecks] = []

    def begin(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> _SlowChecks:
        checks = _SlowChecks(self.verify_many(items))
        self.pending.append(checks)
        return checks


def test_signature_checks_still_running_at_commit_are_waited_for_outside_the_transaction(
    metering: Metering, producer: Meter
) -> None:
    """The write lock is not held while the workers finish: the transaction rolls back, the
    outcomes are waited for outside it, and it runs again; the day is stored once, forged
    readings are still refused."""
    verifier = _SlowVerifier()
    metering.ingest = IngestService(
        unit_of_work(metering.store), read_view(metering.store), verifier, metering.clock
    )
    metering.deliver(*onboarding(producer))
    day = list(day_readings(producer, DAY_START))
    day[10] = day[10] | {"import_wh": int(day[10]["import_wh"]) + 1}
    result = metering.submit(producer, day)
    assert [c.timed_out for c in verifier.pending] == [1]
    assert reasons(result) == {10: Reason.SIGNATURE_INVALID}
    assert len(by_status(result)["accepted"]) == 96
    with metering.engine.connect() as conn:
        assert len(conn.execute(readings.select()).all()) == 96
    assert len(metering.published("metering.readings_received")) == 1
