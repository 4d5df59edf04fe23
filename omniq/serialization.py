"""The one msgspec encoder/decoder used for payloads, results and stored records."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from msgspec.structs import replace

from omniq.exceptions import SerializationError
from omniq.models.task import Task

T = TypeVar("T")

_encoder = msgspec.msgpack.Encoder()
_any_decoder = msgspec.msgpack.Decoder()


def encode(value: Any, *, what: str = "value") -> bytes:
    """Encode to msgpack, raising SerializationError that names the offending type."""
    try:
        return _encoder.encode(value)
    except (TypeError, OverflowError, ValueError) as exc:
        raise SerializationError(f"cannot serialise {what}: {exc}") from None


def encode_checked(value: Any, *, what: str = "value") -> bytes:
    """``encode``, then make sure the bytes decode: a ``msgspec.Raw`` is written verbatim, so
    invalid msgpack inside one would be stored and break every later read of the task."""
    data = encode(value, what=what)
    try:
        _any_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise SerializationError(f"cannot serialise {what}: not valid msgpack ({exc})") from None
    return data


def decode(data: bytes, type: type[T] | None = None) -> T:
    """Decode msgpack, into ``type`` when given (validated by msgspec)."""
    try:
        if type is None:
            return _any_decoder.decode(data)  # type: ignore[no-any-return]
        return msgspec.msgpack.decode(data, type=type)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SerializationError(f"cannot decode stored data: {exc}") from None


def encode_json(value: Any) -> bytes:
    """JSON for humans (CLI output); same types as msgpack."""
    try:
        return msgspec.json.encode(value)
    except (TypeError, OverflowError, ValueError) as exc:
        raise SerializationError(f"cannot serialise value: {exc}") from None


def encode_task(task: Task) -> bytes:
    """A task's stored form: its function as a reference, never a pickled callable."""
    if not isinstance(task.func, str):
        task = replace(task, func=task.func_ref)
    return encode(task, what=f"task {task.id}")


def decode_task(data: bytes) -> Task:
    """A stored task, validated as it is decoded (bad records raise OmniQ errors)."""
    return decode(data, Task)
