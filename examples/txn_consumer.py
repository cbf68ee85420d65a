#!/usr/bin/env python3
"""Reassemble transactions from the stream and order them by commit key.

Reads natsdump's dump lines (one JSON object per message, with "headers"
and "raw", the body) on stdin:

    test/natsdump nats://127.0.0.1:4222 dump ACTIVITY_EVENTS | examples/txn_consumer.py

Groups messages by Statehub-Txn-Id until Statehub-Txn-Count of them are
there, puts each transaction's events in Statehub-Txn-Index order, and
prints the complete transactions, one JSON line each, ordered by
Statehub-Commit-Key.  A message without the headers (published before
1.3) is a transaction of its own.  Incomplete transactions at the end of
the input are reported on stderr.  Standard library only.
"""
import json
import sys


def main():
    pending = {}      # txn id -> {index: envelope}
    complete = []     # (commit key, txn id, [envelopes])
    order = 0
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        msg = json.loads(line)
        hdr = msg.get("headers", {})
        env = json.loads(msg["raw"])
        order += 1
        txn = hdr.get("Statehub-Txn-Id")
        if txn is None:
            # no transaction facts: alone, in stream order
            complete.append(("", "seq-%d" % msg["seq"], [env]))
            continue
        key = hdr["Statehub-Commit-Key"]
        index = int(hdr["Statehub-Txn-Index"])
        count = int(hdr["Statehub-Txn-Count"])
        # a redelivery or a re-publish outside the duplicate window: same index
        events = pending.setdefault((key, txn), {})
        events[index] = env
        if len(events) == count:
            complete.append((key, txn, [events[i] for i in sorted(events)]))
            del pending[(key, txn)]
    # keys of one kind ("lsn/" or "seq/" and 16 hex digits) sort as strings
    for key, txn, events in sorted(complete, key=lambda c: c[0]):
        print(json.dumps({"txn_id": txn, "commit_key": key,
                          "events": [{"id": e["id"], "type": e["type"],
                                      "attributes": e["attributes"]} for e in events]}))
    for (key, txn), events in pending.items():
        print("incomplete transaction %s (%s): %d events so far" % (txn, key, len(events)),
              file=sys.stderr)


if __name__ == "__main__":
    main()
