"""Readings as CSV, for partners back-filling history.

The first line names the columns: ``device_id,metering_point,interval_end,import_wh,export_wh,
signature`` in any order (RFC 4180 quoting allowed). Each further line is one reading with the
same values as in JSON, registers as plain decimal integers. Blank lines are skipped. A line
that cannot be read is refused with its line number; the others are kept.
"""

from __future__ import annotations

import csv
import io

from prosum_metering.application.ingest import Item
from prosum_metering.domain.readings import FIELDS, Reason, Rejection


class CsvError(Exception):
    """The file as a whole cannot be read (encoding, header)."""


def parse_csv(body: bytes, max_rows: int) -> list[Item]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CsvError(f"the file is not UTF-8: {exc}") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise CsvError("the file is empty; the first line names the columns") from None
    except csv.Error as exc:
        raise CsvError(f"line 1: {exc}") from None
    names = [h.strip() for h in header]
    if sorted(names) != sorted(FIELDS):
        raise CsvError(f"line 1 must name the columns {', '.join(FIELDS)}; found {names}")
    items: list[Item] = []
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            items.append(Item(line, None, problem=Rejection(Reason.MALFORMED, str(exc))))
            continue
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(items) >= max_rows:
            raise OverflowError(f"more than {max_rows} readings in one file")
        if len(row) != len(names):
            items.append(
                Item(
                    line,
                    None,
                    problem=Rejection(
                        Reason.MALFORMED, f"expected {len(names)} fields, found {len(row)}"
                    ),
                )
            )
            continue
        items.append(Item(line, dict(zip(names, row, strict=True)), from_text=True))
    return items
