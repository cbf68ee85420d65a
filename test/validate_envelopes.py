#!/usr/bin/env python3
"""Validate message bodies against the consumers' EventEnvelope model.

Reads one JSON message body per line on stdin (the envelope as published),
validates each with pydantic (v2, or v1 as Debian ships it) and
extra='forbid', plus the checks consumers rely on: id is a canonical
lowercase uuid v4, the timestamp carries UTC.  Prints "ok N" or the first
failure and exits 1.

The model mirrors seed 001 (api/events/envelope.py), made strict.
"""
import json
import sys
import uuid
from datetime import datetime, timedelta
from typing import Any, Dict

import pydantic
from pydantic import BaseModel, Field

V2 = pydantic.VERSION.startswith("2")


class EventEnvelope(BaseModel):
    id: str = Field(description="UUID v4")
    type: str
    version: str = "1.0"
    timestamp: datetime
    publisher: str = "state-hub"
    attributes: Dict[str, Any] = Field(default_factory=dict)

    if V2:
        model_config = pydantic.ConfigDict(extra="forbid")
    else:
        class Config:
            extra = "forbid"


def check(line: str) -> None:
    body = json.loads(line)
    env = EventEnvelope.model_validate(body) if V2 else EventEnvelope.parse_obj(body)
    u = uuid.UUID(env.id)
    assert str(u) == env.id and u.version == 4, f"id {env.id!r} is not a canonical uuid v4"
    assert env.version == "1.0", f"version {env.version!r}"
    assert env.timestamp.utcoffset() == timedelta(0), f"timestamp {body['timestamp']!r} is not UTC"
    assert body["timestamp"].endswith("Z"), f"timestamp {body['timestamp']!r} does not end in Z"


def main() -> int:
    n = 0
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            check(line)
        except Exception as e:  # report the first failure with its message
            print(f"invalid envelope: {e}\n{line}")
            return 1
        n += 1
    print(f"ok {n} (pydantic {pydantic.VERSION})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
