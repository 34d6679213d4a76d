"""``python -m ecokit.bench.worker FD``: one worker process of a bench run.

The coordinator starts it with one end of a socket pair as file descriptor FD, sends the
job (a pickled ``PublisherJob`` or ``SubscriberJob``) as the first message, and then
speaks the protocol of ``ecokit.bench.protocol`` over the same connection. A plain
``python -m`` child (rather than multiprocessing's spawn) never re-imports the caller's
main module, so any script or test may start a bench run.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m ecokit.bench.worker FD (started by ecokit bench)", file=sys.stderr)
        return 2
    conn = Connection(int(argv[0]))
    message = conn.recv()
    if message[0] == "publishers":
        from ecokit.bench.publisher import run_publishers

        run_publishers(conn, message[1])
    elif message[0] == "subscribers":
        from ecokit.bench.subscriber import run_subscribers

        run_subscribers(conn, message[1])
    else:
        print(f"ecokit.bench.worker: unknown job {message[0]!r}", file=sys.stderr)
        return 2
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
