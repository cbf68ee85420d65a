#!/usr/bin/env python3
# bench/hoptrace/hops.py FILE...: medians of each hop of the traced
# single-event commits (nanosecond columns from the hoptrace build, relative
# to the hand-over).  Only commits whose publisher slept and whose hops are
# in order count (a publisher that was awake has no wake-up time).
import statistics as st, sys
N = {0: 'hand-over start', 1: 'appended', 3: 'publisher woke', 4: 'taken',
     5: 'lingered', 14: 'publish_core entry', 15: 'message built',
     6: 'before js_PublishMsg', 7: 'send() done', 8: 'recv() of ack',
     9: 'js_PublishMsg returned', 10: 'report, SetLatch', 11: 'backend woke',
     12: 'end'}
SEQ = [0, 1, 3, 4, 5, 14, 15, 6, 7, 8, 9, 10, 11, 12]
for f in sys.argv[1:]:
    rows = [list(map(int, l.split())) for l in open(f)]
    ok = [r for r in rows if all(r[i] > 0 for i in SEQ[1:]) and
          all(r[SEQ[k]] <= r[SEQ[k + 1]] for k in range(len(SEQ) - 1))]
    print('%s: %d commits, %d counted; total median %.1f us (all %.1f)' % (
        f, len(rows), len(ok), st.median(r[12] for r in ok) / 1000,
        st.median(r[12] for r in rows) / 1000))
    for a, b in zip(SEQ, SEQ[1:]):
        print('  %22s -> %-22s %7.1f' % (N[a], N[b], st.median(r[b] - r[a] for r in ok) / 1000))
