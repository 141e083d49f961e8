"""--max-rate and --max-lag benchmark, side by side in one run on one nx-27017 answering as a
replica set (``NX_REPLICA_SET``) whose secondary's lag a file sets (``NX_SECONDARY_LAG_FILE``,
0 s here: the check is measured, not the wait).

    python -m bench.throttle [--orders 10000] [--rates 200 1000 5000] [--seconds 8] [--batch-size 100]

Measures, on the same server and data (the archive dropped between runs):
  (u) batch --run with no limit (--compare orders; after a warm-up run, alternated twice with
      (l), the best of each): the server's own top rate here, and its time per chunk;
  (r) batch --run --max-rate R for each R, about --seconds long each: the rate held, over the
      whole pass (the summary's rate: at most R, the pacer starting empty) and past its first
      second, against R; a rate above (u) cannot be held here: said, not run;
  (g) one replSetGetStatus round trip (the median of 200) against (u)'s time per chunk;
  (l) batch --run --max-lag 60s (the secondary 0 s behind: no wait) beside (u): its rate, and
      the lag commands sent per chunk (one a second at most: replication_lag.CACHE_S);
  (s) batch --run --full --max-rate R for each R over an archive that holds every order (a
      full sweep that reads and skips them all: #34's "only new writes were held"), ended by
      --max-runtime after --seconds: the rate of the orders read, at the wire (the _ids the
      read asks the archive about, a page at a time) past its first second, and the summary's.
Figures from nx-27017 are not MongoDB's: read the ratios, measured side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pymongo
from pymongo import monitoring

# Run as a file (python bench/throttle.py), Python puts bench/ first on the path, not the
# project's folder: the product and teststand are imported from there.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from order_archiver.batch.job import BatchArchiver, BatchOptions
from order_archiver.settings import Settings
from order_archiver.simulation.database import fill_database
from order_archiver.simulation.generator import generate_dataset
from teststand.devserver import DevServer

DB = "bench"
WITHIN = 0.10  # the tolerance: the rate held within 10 % of --max-rate


class Writes(monitoring.CommandListener):
    """When each archive write was acknowledged, and how many orders it carried; with ``reads``,
    when each page's question to the archive (which of these _ids it holds) was answered, and
    how many orders it asked about: the orders a sweep reads, archived or not."""

    def __init__(self, collection: str) -> None:
        self.collection = collection
        self.pending: dict[int, int] = {}
        self.acknowledged: list[tuple[float, int]] = []
        self.lag_checks = 0
        self.reads = False

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        if name in ("insert", "update") and event.command.get(name) == self.collection:
            # The archive's writes are inserts (``storage.ArchiveWriter``; a revision an update)
            self.pending[event.request_id] = len(
                event.command.get("documents" if name == "insert" else "updates") or []
            )
        elif self.reads and event.command_name == "find" and event.command.get("find") == self.collection:
            ids = ((event.command.get("filter") or {}).get("_id") or {}).get("$in")
            if isinstance(ids, list):
                self.pending[event.request_id] = len(ids)
        elif event.command_name == "replSetGetStatus":
            self.lag_checks += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        orders = self.pending.pop(event.request_id, None)
        if orders is not None:
            self.acknowledged.append((time.monotonic(), orders))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.pending.pop(event.request_id, None)

    def reset(self) -> None:
        self.acknowledged.clear()
        self.lag_checks = 0

    def rate_after(self, skip_s: float) -> float:
        """Orders a second between the first write ``skip_s`` after the pass's first one and the last."""
        if len(self.acknowledged) < 2:
            return 0.0
        start = self.acknowledged[0][0] + skip_s
        later = [(t, n) for t, n in self.acknowledged if t >= start]
        if len(later) < 2:
            return 0.0
        return sum(n for _, n in later[1:]) / (later[-1][0] - later[0][0])


def archive_run(client: pymongo.MongoClient, settings: Settings, **options: Any) -> Any:
    """One batch --run over a fresh archive (dropped, checkpoint too): its report."""
    database = client[DB]
    for name in (settings.archive_collection, settings.checkpoint_collection, settings.rejects_collection):
        database.drop_collection(name)
    run = BatchArchiver(client, settings, BatchOptions(run=True, samples=0, **options))
    report = run.run()
    return report, run


def sweeps(
    client: pymongo.MongoClient, writes: Writes, settings: Settings, args: argparse.Namespace
) -> list[Any]:
    """(s): the archive made whole (no limit), then for each R a --full sweep of it at R, ended
    by --max-runtime (the checkpoint ignored: each starts at the first order)."""
    archive_run(client, settings, batch_size=args.batch_size)
    figures = []
    writes.reads = True
    try:
        for rate in args.rates:
            writes.reset()
            options = BatchOptions(
                run=True,
                samples=0,
                full=True,
                resume=False,
                batch_size=args.batch_size,
                max_rate=rate,
                max_runtime=timedelta(seconds=args.seconds),
            )
            report = BatchArchiver(client, settings, options).run()
            steady = writes.rate_after(1.0)
            held = {
                "max_rate": rate,
                "orders_read": report.scanned,
                "already_archived": report.already_archived,
                "whole_pass": round(report.orders_per_second / rate, 3),
                "past_first_second": round(steady / rate, 3),
                "within_10pc": abs(steady / rate - 1) <= WITHIN,
            }
            figures.append(held)
            print(
                f"(s) --full --max-rate {rate:,} over an archived history: {report.scanned:,} orders read "
                f"({report.already_archived:,} already archived), {report.orders_per_second:,.0f}/s over "
                f"the pass ({held['whole_pass']:.2f} of R), {steady:,.0f}/s at the wire past its first "
                f"second ({held['past_first_second']:.2f} of R)"
            )
    finally:
        writes.reads = False
    return figures


def lag_round_trip(client: pymongo.MongoClient, times: int = 200) -> float:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        client.admin.command("replSetGetStatus")
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def unlimited_and_checked(
    client: pymongo.MongoClient, writes: Writes, settings: Settings, args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(u) and (l), alternated twice after a warm-up run (the first run on a fresh server is
    slower): the best of each, and the lag commands per chunk."""
    archive_run(client, settings, batch_size=args.batch_size, limit=min(args.orders, 2000))  # warm-up
    best: dict[str, dict[str, Any]] = {}
    for _ in range(2):
        for name, extra in (("u", {}), ("l", {"max_lag": timedelta(seconds=60)})):
            writes.reset()
            report, _ = archive_run(client, settings, batch_size=args.batch_size, limit=args.compare, **extra)
            chunks = max(len(writes.acknowledged), 1)
            figures = {
                "orders_per_s": report.orders_per_second,
                "s_per_chunk": (report.pass_seconds or report.seconds) / chunks,
                "lag_commands_per_chunk": round(writes.lag_checks / chunks, 3),
                "chunks": chunks,
                "lag_commands": writes.lag_checks,
                "waited_s": report.lag_waited_s,
            }
            if figures["orders_per_s"] > best.get(name, {}).get("orders_per_s", 0):
                best[name] = figures
    return best["u"], best["l"]


def measure(client: pymongo.MongoClient, writes: Writes, args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings(mongodb_uri="mongodb://unused", mongodb_database=DB, batch_size=args.batch_size)
    figures: dict[str, Any] = {"orders": args.orders, "batch_size": args.batch_size}
    top, checked = unlimited_and_checked(client, writes, settings, args)
    top_rate, per_chunk_s = top["orders_per_s"], top["s_per_chunk"]
    figures["unlimited"] = top
    print(f"(u) no limit: {top_rate:,.0f} orders/s, {per_chunk_s * 1000:.1f} ms a chunk")
    figures["max_lag"] = {**checked, "of_unlimited": round(checked["orders_per_s"] / top_rate, 3)}
    print(
        f"(l) --max-lag 60s: {checked['orders_per_s']:,.0f} orders/s ({figures['max_lag']['of_unlimited']:.2f} "
        f"of (u)), {checked['lag_commands']} replSetGetStatus for {checked['chunks']} chunks "
        f"({checked['lag_commands_per_chunk']:.2f} a chunk), waited {checked['waited_s']:.1f}s"
    )
    trip = lag_round_trip(client)
    # What the check itself costs a pass: the commands it sent, each a round trip, over the
    # pass's time (a difference between (l) and (u) beyond it is this machine's noise).
    share = checked["lag_commands_per_chunk"] * trip / checked["s_per_chunk"]
    figures["lag_check"] = {
        "round_trip_s": trip,
        "of_a_chunk": round(trip / per_chunk_s, 4),
        "of_the_pass": share,
    }
    print(
        f"(g) one replSetGetStatus: {trip * 1000:.2f} ms, {trip / per_chunk_s:.2%} of a chunk's time; "
        f"(l)'s checks: {share:.3%} of its pass"
    )

    figures["rates"] = []
    for rate in args.rates:
        if rate > top_rate * (1 - WITHIN):
            print(f"(r) --max-rate {rate:,}: above this server's own top rate (u): not measurable here")
            figures["rates"].append({"max_rate": rate, "held": None, "why": "above the server's top rate"})
            continue
        limit = min(args.orders, int(rate * args.seconds))
        writes.reset()
        report, _ = archive_run(client, settings, batch_size=args.batch_size, max_rate=rate, limit=limit)
        whole = report.orders_per_second
        steady = writes.rate_after(1.0)
        if not steady:
            print(f"(r) --max-rate {rate:,}: too few chunks past the first second (lower --batch-size)")
            figures["rates"].append({"max_rate": rate, "held": None, "why": "too few chunks"})
            continue
        held = {
            "max_rate": rate,
            "orders": report.scanned,
            "whole_pass": round(whole / rate, 3),
            "past_first_second": round(steady / rate, 3),
            "within_10pc": abs(steady / rate - 1) <= WITHIN,
        }
        figures["rates"].append(held)
        print(
            f"(r) --max-rate {rate:,}: {report.scanned:,} orders, {whole:,.0f}/s over the pass "
            f"({held['whole_pass']:.2f} of R), {steady:,.0f}/s past its first second "
            f"({held['past_first_second']:.2f} of R)"
        )
    figures["sweeps"] = sweeps(client, writes, settings, args)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=10_000, help="delivered orders seeded (all delivered)")
    parser.add_argument("--rates", type=int, nargs="+", default=[200, 1000, 5000])
    parser.add_argument("--seconds", type=float, default=8.0, help="about how long each --max-rate run lasts")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--compare", type=int, default=4000, help="orders of each (u) and (l) run")
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-throttle-") as folder:
        lag_file = Path(folder) / "secondary_lag_s"
        lag_file.write_text("0")
        env = {"NX_REPLICA_SET": "rs0", "NX_SECONDARY_LAG_FILE": str(lag_file)}
        server = DevServer(Path(folder) / "data", env=env).start()
        try:
            settings = Settings(mongodb_uri="mongodb://unused", mongodb_database=DB)
            writes = Writes(settings.archive_collection)
            with pymongo.MongoClient(server.uri, tz_aware=True, event_listeners=[writes]) as client:
                dataset = generate_dataset(args.orders, seed=1, p_delivered=1.0, p_anomalies=0.0)
                fill_database(client[DB], dataset, settings, chunk_size=2000)
                figures = measure(client, writes, args)
        finally:
            server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
