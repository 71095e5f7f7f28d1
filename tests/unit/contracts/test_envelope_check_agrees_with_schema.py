"""``envelope_problem`` (the envelope schema's rules in Python, used on publish) accepts exactly
the documents the compiled ``envelope.v1.json`` accepts (hypothesis: valid envelopes with one
or more fields replaced by something near the edge of each rule)."""

from __future__ import annotations

from typing import Any

import fastjsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prosum_contracts.registry import _compile, _load_envelope_schema, envelope_problem

SCHEMA = _compile(_load_envelope_schema())

GOOD: dict[str, Any] = {
    "envelope_version": 1,
    "event_id": "8c1f6f0e-2f47-4b7e-9a57-3f4c1e0d2b11",
    "type": "metering.intervals_measured",
    "schema_version": 1,
    "source": "metering",
    "subject": "producer-1",
    "occurred_at": "2026-11-21T12:30:15.123456Z",
    "trace": {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
    "data": {"anything": [1, 2]},
}

texts = st.one_of(
    st.text(max_size=3),
    st.text(min_size=120, max_size=140),
    st.text(min_size=250, max_size=260),
    st.text(alphabet="ab.z_09A\n-", max_size=12),
    st.sampled_from(["", "a.b", "a.b\n", "A.b", "a..b", "a", "a.b.c_d", "x" * 129]),
)
others = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 3),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["traceparent", "tracestate", "x"]), texts, max_size=2),
)
times = st.sampled_from(
    [
        "2026-11-21T12:30:15Z",
        "2026-11-21T12:30:15.5+01:00",
        "2026-02-30T12:30:15Z",
        "2026-13-01T12:30:15Z",
        "2026-11-21 12:30:15Z",
        "2026-11-21T24:00:00Z",
        "2026-11-21T12:30:15Z\n",
        "2024-02-29T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "2026-11-21T12:30:60Z",
    ]
)
traces = st.one_of(
    st.just({}),
    st.fixed_dictionaries(
        {},
        optional={
            "traceparent": st.one_of(
                st.just("00-" + "a" * 32 + "-" + "b" * 16 + "-01"),
                st.just("00-" + "A" * 32 + "-" + "b" * 16 + "-01"),
                texts,
            ),
            "tracestate": st.one_of(st.text(max_size=3), st.text(min_size=510, max_size=515)),
            "extra": texts,
        },
    ),
)
FIELDS = [*GOOD, "correlation_id", "causation_id", "unknown"]


@settings(max_examples=1500, deadline=None)
@given(
    changes=st.dictionaries(
        st.sampled_from(FIELDS),
        st.one_of(
            texts,
            others,
            times,
            traces,
            st.sampled_from(["identity", "ops", "ledger-adapter", "bank"]),
        ),
        max_size=3,
    ),
    removed=st.sets(st.sampled_from(list(GOOD)), max_size=1),
)
def test_the_python_check_and_the_compiled_schema_agree(
    changes: dict[str, Any], removed: set[str]
) -> None:
    document = {**GOOD, **changes}
    for name in removed:
        document.pop(name, None)
    try:
        SCHEMA(document)
        schema_accepts = True
    except fastjsonschema.JsonSchemaValueException:
        schema_accepts = False
    problem = envelope_problem(document)
    assert (problem is None) == schema_accepts, (problem, document)


def test_a_valid_envelope_passes() -> None:
    assert envelope_problem(GOOD) is None
    SCHEMA(GOOD)


def test_a_newline_after_a_pattern_is_refused_as_the_schema_refuses_it() -> None:
    """The schema's patterns end in "$", which fastjsonschema reads as the very end."""
    traceparent = GOOD["trace"]["traceparent"] + "\n"
    for changed in (
        {"type": "a.a\n"},
        {"occurred_at": GOOD["occurred_at"] + "\n"},
        {"trace": {"traceparent": traceparent}},
    ):
        document = {**GOOD, **changed}
        assert envelope_problem(document) is not None, changed
        with pytest.raises(fastjsonschema.JsonSchemaValueException):
            SCHEMA(document)
