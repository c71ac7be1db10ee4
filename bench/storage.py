"""Storage benchmark: what the app's database operations cost on PostgreSQL against SQLite, side by side.

Every operation goes through the product's own code (`ConversationLog`, `RateLimiter`, `Sessions`) on a fresh
database of each engine, measured the same way in the same run: a customer's turn as the engine logs it (the
customer's message and the bot's reply), a rating, reading a conversation, the agents' queue with `--queue`
conversations waiting, a rate-limit count and a staff session check. Medians of `--runs` calls (after 20
warm-up calls), and the ratio PostgreSQL / SQLite.

    .venv/bin/python bench/storage.py                 # starts a throw-away PostgreSQL server (tests/pgcluster.py)
    .venv/bin/python bench/storage.py --database postgresql://user:pw@host:5432/empty_db

SQLite is the home's file on the local disk (WAL, synchronous=NORMAL); PostgreSQL is reached over TCP
(loopback for the throw-away server, fsync off there: it measures the access path, not a disk).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests"))

from chatbot import ConversationLog  # noqa: E402
from chatbot.config import RateLimits  # noqa: E402
from ui.auth import Accounts, Sessions  # noqa: E402
from ui.ratelimit import Caller, RateLimiter  # noqa: E402


def median_ms(call: Callable[[int], object], runs: int) -> float:
    for i in range(20):
        call(-1 - i)
    times = []
    for i in range(runs):
        started = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def measure(target, runs: int, queue: int) -> dict[str, float]:
    log = ConversationLog(target)
    limiter = RateLimiter(RateLimits(chat_per_session=10**9, chat_per_address=10**9), log.db)
    sessions = Sessions(Accounts([], log.db), 60, log.db)
    token, _ = sessions.login("agent", "agent")
    for n in range(queue):  # conversations waiting for a person
        conversation = log.start("web")
        log.add_message(conversation, "customer", f"Question {n} about my order?")
        log.add_message(conversation, "bot", "I'm passing this to a colleague.", handed_off=1, reason="low_confidence")
    conversation = log.start("web")
    bots: list[int] = []

    def turn(i: int) -> None:
        log.add_message(conversation, "customer", f"Where is my parcel number {i}?")
        bots.append(log.add_message(conversation, "bot", "Parcels arrive in 3-5 business days [1].", confidence=0.8,
                                    sources=[{"n": 1, "id": "ship-times", "title": "Delivery times", "score": 0.8}]))

    results = {"customer turn (2 messages)": median_ms(turn, runs)}
    results["rating"] = median_ms(lambda i: log.add_feedback(bots[i], i % 2 == 0, "thanks"), runs)
    short = log.start("web")
    for n in range(10):
        log.add_message(short, "customer", f"Question {n}?")
        log.add_message(short, "bot", f"Answer {n}.")
    results["read a conversation (20 messages)"] = median_ms(lambda i: log.history(short), runs)
    results[f"agents' queue ({queue} waiting)"] = median_ms(lambda i: log.awaiting_reply(), max(10, runs // 10))
    results["rate-limit count"] = median_ms(lambda i: limiter.take("chat", Caller("10.0.0.1", f"s{i % 50}")), runs)
    results["staff session check"] = median_ms(lambda i: sessions.require(token, "agent"), runs)
    log.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", help="an empty PostgreSQL database (default: a throw-away local server)")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--queue", type=int, default=200)
    args = parser.parse_args()
    cluster = None
    url = args.database
    if not url:
        from pgcluster import Cluster, server_bin

        cluster = Cluster(server_bin()).start()
        url = cluster.new_database()
    try:
        with tempfile.TemporaryDirectory() as folder:
            sqlite = measure(Path(folder) / "bench.sqlite", args.runs, args.queue)
        postgres = measure(url, args.runs, args.queue)
    finally:
        if cluster:
            cluster.remove()
    print("| operation | SQLite ms (median) | PostgreSQL ms (median) | PostgreSQL / SQLite |")
    print("|---|---|---|---|")
    for name, base in sqlite.items():
        print(f"| {name} | {base:.2f} | {postgres[name]:.2f} | {postgres[name] / base:.2f}x |")


if __name__ == "__main__":
    main()
