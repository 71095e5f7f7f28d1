from __future__ import annotations


class ContractError(Exception):
    """A message does not honour the integration contract.

    ``reason`` is a stable machine-readable code (it goes into the dead-letter record);
    ``detail`` says what exactly was wrong.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class MalformedMessage(ContractError):
    def __init__(self, detail: str) -> None:
        super().__init__("malformed", detail)


class UnknownEventType(ContractError):
    def __init__(self, type_: str, version: object) -> None:
        super().__init__("unknown_type", f"no schema for event type {type_!r} version {version!r}")


class InvalidEvent(ContractError):
    def __init__(self, detail: str) -> None:
        super().__init__("invalid", detail)
