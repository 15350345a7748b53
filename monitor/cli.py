"""The `loopmon` command."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import zmq

from monitor import __version__
from monitor.config import ConfigError, Settings, load_settings

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

DESCRIPTION = """\
loopmon watches an autonomous coding-agent loop (a supervisor and an engineer agent
taking turns on one git repository) and tells you, as it happens, whether the loop is
producing code or spinning: it scores every iteration, counts dwell (planning turns
with no code landing), raises alerts, keeps everything in SQLite and shows it live.

start here:   loopmon demo                 a simulated loop, monitored live
a real loop:  loopmon run --repo PATH      watch it (Ctrl-C to stop)
its history:  loopmon backfill --repo PATH score everything already committed
"""


class UsageError(Exception):
    """A command line that cannot be carried out; exit status 2."""


# --------------------------------------------------------------------------- helpers


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, getattr(args, "repo", None))


def _repo(args: argparse.Namespace, must_exist: bool = True) -> Path:
    repo = Path(args.repo or os.getcwd()).expanduser()
    if must_exist and not repo.is_dir():
        raise UsageError(f"--repo {repo}: no such folder")
    return repo.resolve() if repo.exists() else repo


def _db(args: argparse.Namespace, repo: Path | None, settings: Settings) -> Path:
    from monitor.runtime import default_db_path

    if args.db:
        return Path(args.db).expanduser()
    if repo is None:
        return Path(settings.store.db)
    return default_db_path(repo, settings)


def stop_event(duration: float | None = None) -> threading.Event:
    """An event set by Ctrl-C, SIGTERM, or (when given) after `duration` seconds."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    if duration:
        timer = threading.Timer(duration, stop.set)
        timer.daemon = True  # a signal must not wait for the timer
        timer.start()
    return stop


def _err(message: str) -> None:
    print(f"loopmon: {message}", file=sys.stderr, flush=True)


def _make_scorer(settings: Settings, store: Any) -> Any:
    """A scorer that has caught up with what the store already holds."""
    from monitor.scorer import Scorer

    scorer = Scorer(settings)
    scorer.restore(store.input_events(), store.alert_keys())
    return scorer


class Monitor:
    """The receiving half with its sinks, as every command that writes the store builds it."""

    def __init__(
        self, settings: Settings, db: Path, endpoint: str, context: zmq.Context, *, headless: bool, view: bool = True, keys: Any = None
    ) -> None:
        from monitor.runtime import Server
        from sinks.sqlite import SqliteSink

        self.store = SqliteSink(db, settings.store)
        sinks: list[Any] = [self.store]
        self.view = None
        if headless:
            from sinks.headless import JsonLinesSink

            sinks.append(JsonLinesSink())
        elif view:
            from sinks.live import LiveView

            # Start from what the store already knows, so a restart shows the history.
            self.view = LiveView.from_store(db, settings=settings.view) if db.exists() else LiveView(settings.view)
            sinks.append(self.view)
        self.server = Server(
            endpoint, sinks, settings, context=context, scorer=_make_scorer(settings, self.store), on_error=_err, keys=keys
        )
        # Events a restarted collector sends again are recognised as already stored.
        self.server.receiver.resume(self.store.stream_positions(), stored=self.store.holds)

    def start(self) -> "Monitor":
        self.server.start()
        return self

    def wait(self, stop: threading.Event) -> None:
        """Show the live view (or just wait) until `stop` is set."""
        if self.view is not None:
            self.view.run(stop)
        else:
            stop.wait()

    def close(self) -> None:
        self.server.stop()


# --------------------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    from monitor.runtime import CollectorSet, inproc_endpoint

    repo = _repo(args)
    settings = _settings(args)
    db = _db(args, repo, settings)
    if args.snapshot:
        return _snapshot(db, args.snapshot, settings)
    context = zmq.Context()
    endpoint = inproc_endpoint()
    monitor = Monitor(settings, db, endpoint, context, headless=args.headless).start()
    collectors = CollectorSet(repo, settings, endpoint, context=context).start()
    stop = stop_event(args.duration)
    try:
        monitor.wait(stop)
    finally:
        collectors.stop()
        monitor.close()
        collectors.close()
    if not args.headless:
        print(f"loopmon: database at {db}")
    return EXIT_OK


def _snapshot(db: Path, target: str, settings: Settings) -> int:
    from sinks.live import LiveView

    if not db.exists():
        raise UsageError(f"--db {db}: no such database (run `loopmon run` or `loopmon backfill` first)")
    if not target.endswith((".svg", ".html")):
        raise UsageError("--snapshot takes a FILE.svg or FILE.html")
    LiveView.from_store(db, settings=settings.view).snapshot(target)
    print(f"loopmon: snapshot written to {target}")
    return EXIT_OK


def _keys(args: argparse.Namespace, kind: str) -> Any:
    from monitor.keys import CollectorKeys, KeyError_, ServerKeys

    if not args.keys:
        return None
    try:
        return (ServerKeys if kind == "server" else CollectorKeys).load(args.keys)
    except KeyError_ as err:
        raise UsageError(f"--keys: {err}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    from monitor.bus import InsecureEndpoint

    settings = _settings(args)
    db = _db(args, None, settings)
    if args.metrics:
        from monitor.metrics import MetricsAddressError, parse_address

        try:
            parse_address(args.metrics)
        except MetricsAddressError as err:
            raise UsageError(str(err)) from None
    context = zmq.Context()
    try:
        monitor = Monitor(settings, db, args.bind, context, headless=args.headless, keys=_keys(args, "server")).start()
    except InsecureEndpoint as err:
        raise UsageError(f"--bind: {err}") from None
    except zmq.ZMQError as err:
        raise UsageError(f"--bind {args.bind}: {err}") from None
    metrics = None
    if args.metrics:
        from monitor.metrics import MetricsServer

        try:
            # Read from the store on each scrape, plus the receiver's counters: nothing on the hot path.
            metrics = MetricsServer(args.metrics, db, settings, counters=monitor.server.receiver.counters)
        except OSError as err:
            monitor.close()
            raise UsageError(f"--metrics {args.metrics}: {err}") from None
        print(f"loopmon: metrics at {metrics.url}", file=sys.stderr, flush=True)
    stop = stop_event(args.duration)
    print(f"loopmon: serving {monitor.server.endpoint} into {db}", file=sys.stderr, flush=True)
    try:
        monitor.wait(stop)
    finally:
        if metrics is not None:
            metrics.close()
        monitor.close()
    return EXIT_OK


def cmd_collect(args: argparse.Namespace) -> int:
    from monitor.runtime import CollectorSet

    repo = _repo(args)
    settings = _settings(args)
    context = zmq.Context()
    collectors = CollectorSet(repo, settings, args.connect, context=context, keys=_keys(args, "collector")).start()
    stop = stop_event(args.duration)
    print(f"loopmon: collecting {repo} into {args.connect}", file=sys.stderr, flush=True)
    try:
        stop.wait()
    finally:
        collectors.stop()
        collectors.close()
        context.term()
    return EXIT_OK


def cmd_backfill(args: argparse.Namespace) -> int:
    from collectors.commits import backfill
    from collectors.gitlog import GitError
    from monitor.bus import Publisher
    from monitor.runtime import inproc_endpoint, repo_id_for
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    repo = _repo(args)
    settings = _settings(args)
    db = _db(args, repo, settings)
    context = zmq.Context()
    endpoint = inproc_endpoint()
    monitor = Monitor(settings, db, endpoint, context, headless=False, view=False).start()
    publisher = Publisher(endpoint, repo_id_for(repo, settings), "backfill", settings=settings.bus, context=context)
    progress = Progress(
        TextColumn("backfill"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False, disable=args.quiet
    )
    task = progress.add_task("commits", total=None)

    def advance(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    try:
        with progress:
            with publisher.batch():  # a replay is one long burst: many envelopes to a message
                count = backfill(repo, settings, publisher.publish, rev=args.rev, since=args.since, progress=advance)
    except GitError as err:
        raise UsageError(f"backfill of {repo}: {err}") from None
    finally:
        publisher.heartbeat(final=True)
        if not publisher.flush(timeout=60):
            _err(f"{publisher.pending} events were not confirmed stored before shutdown")
        monitor.close()
        publisher.close()
    print(f"loopmon: {count} commits replayed into {db}")
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from monitor.simulator import SCENARIOS, LoopSimulator

    if args.scenario not in SCENARIOS:
        raise UsageError(f"--scenario {args.scenario}: unknown; choose from {', '.join(SCENARIOS)}")
    repo = _repo(args, must_exist=False)
    repo.mkdir(parents=True, exist_ok=True)
    stop = stop_event()
    sim = LoopSimulator(repo, scenario=args.scenario, seed=args.seed, pace=args.pace)
    turns = sim.run(args.iterations, stop=stop)
    print(f"loopmon: simulated {len(turns)} turns in {repo}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from monitor.runtime import CollectorSet, inproc_endpoint
    from monitor.simulator import LoopSimulator

    settings = _settings(args)
    workdir = Path(tempfile.mkdtemp(prefix="loopmon-demo-"))
    repo = workdir / "loop"
    repo.mkdir()
    db = Path(args.db).expanduser() if args.db else workdir / "loopmon.db"
    sim = LoopSimulator(repo, scenario=args.scenario, seed=args.seed, pace=args.pace)
    context = zmq.Context()
    endpoint = inproc_endpoint()
    monitor = Monitor(settings, db, endpoint, context, headless=args.headless).start()
    collectors = CollectorSet(repo, settings, endpoint, context=context).start()
    stop = stop_event()

    def play() -> None:
        try:
            sim.run(args.iterations, stop=stop)
        except Exception as exc:
            _err(f"the simulator stopped: {exc!r}")
        finally:
            # Let the last turn's events reach the store and the view before leaving.
            time.sleep(1.0)
            stop.set()

    player = threading.Thread(target=play, name="loopmon-simulator", daemon=True)
    player.start()
    try:
        monitor.wait(stop)
    finally:
        stop.set()
        player.join(10)
        collectors.stop()
        monitor.close()
        collectors.close()
    print(f"loopmon: demo repository at {repo}")
    print(f"loopmon: database at {db}  (try: loopmon run --repo {repo} --snapshot view.svg --db {db})")
    return EXIT_OK


def cmd_keys(args: argparse.Namespace) -> int:
    from monitor.keys import KeyError_, generate

    try:
        made = generate(args.dir)
    except KeyError_ as err:
        raise UsageError(str(err)) from None
    print(f"loopmon: keys written to {args.dir}")
    print(f"  server:     loopmon serve --bind tcp://HOST:PORT --keys {args.dir}")
    print(f"  collectors: copy {made['server_public'].name} and {made['collector_secret'].name} into a folder K, then")
    print("              loopmon collect --connect tcp://HOST:PORT --keys K")
    return EXIT_OK


def _store_reader(args: argparse.Namespace) -> tuple[Any, str, Settings, Path | None]:
    """(read-only connection, repo id, settings, the repo's folder when at hand) for commands that only read."""
    from monitor.query import QueryError, open_readonly, resolve_repo_id
    from monitor.runtime import repo_id_for

    settings = _settings(args)
    path = Path(args.repo or os.getcwd()).expanduser()
    folder = path.resolve() if path.is_dir() else None
    if folder is None and not args.db:
        raise UsageError(f"--repo {path}: no such folder")
    db = _db(args, folder, settings)
    try:
        conn = open_readonly(db)
    except QueryError as err:
        raise UsageError(str(err)) from None
    try:
        repo = resolve_repo_id(conn, folder, args.repo, settings)
    except QueryError as err:
        conn.close()
        raise UsageError(str(err)) from None
    return conn, repo, settings, folder if folder is not None and repo_id_for(folder, settings) == repo else None


def cmd_query(args: argparse.Namespace) -> int:
    from rich.console import Console

    from monitor import query

    conn, repo, _, _ = _store_reader(args)
    try:
        with query.snapshot(conn):
            view = query.build_view(
                conn, repo, args.view, last=getattr(args, "last", None), bucket=getattr(args, "bucket", None),
                focus=getattr(args, "focus", None), since=getattr(args, "since", None), kind=getattr(args, "kind", None),
                text=getattr(args, "text", None), statement=getattr(args, "statement", None),
            )
    except query.QueryError as err:
        raise UsageError(str(err)) from None
    finally:
        conn.close()
    if args.json:
        sys.stdout.write(query.to_json(view) + "\n")
    elif args.csv:
        sys.stdout.write(query.to_csv(view))
    else:
        query.render_table(query.table_columns(args.view, view), Console())
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from monitor.query import QueryError
    from monitor.report import build_report

    conn, repo, settings, folder = _store_reader(args)
    try:
        text = build_report(conn, repo, settings, args.first, args.last, root=folder)
    except QueryError as err:
        raise UsageError(str(err)) from None
    finally:
        conn.close()
    if args.output:
        Path(args.output).expanduser().write_text(text, encoding="utf-8")
        print(f"loopmon: report written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_gate(args: argparse.Namespace) -> int:
    from monitor.gate import evaluate
    from monitor.query import QueryError

    conn, repo, settings, folder = _store_reader(args)
    try:
        verdict = evaluate(conn, repo, settings, focus=args.focus, max_tier=args.max_tier, root=folder)
    except QueryError as err:
        raise UsageError(str(err)) from None
    finally:
        conn.close()
    for reason in verdict.reasons:
        _err(f"gate: {reason.message}")
    if args.json:
        print(verdict.to_json())
    return verdict.status


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loopmon", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"loopmon {__version__}")
    parser.add_argument(
        "--config", metavar="PATH", help="settings file (default: $LOOPMON_CONFIG, else <repo>/loopmon.toml, else built-in defaults)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        p.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help="settings file (see loopmon --help)")
        return p

    def repo_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--repo", metavar="PATH", help="the loop's git repository (default: the current folder)")

    def db_arg(p: argparse.ArgumentParser, default: str = "<repo>/.loopmon/loopmon.db") -> None:
        p.add_argument("--db", metavar="PATH", help=f"the SQLite store (default: {default})")

    def duration_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--duration", type=float, metavar="SECONDS", help="stop by itself after this long")

    p = add(
        "run",
        cmd_run,
        "watch a loop live: collectors, scorer, store and view in one process",
        "Watch a loop's repository as it runs: every commit and file change is collected, scored,\n"
        "stored in SQLite and shown live. Ctrl-C stops it.",
    )
    repo_arg(p)
    db_arg(p)
    p.add_argument("--headless", action="store_true", help="no live view: one JSON line per event on stdout")
    p.add_argument("--snapshot", metavar="FILE", help="write the current view from the store to FILE.svg or FILE.html and exit")
    duration_arg(p)

    p = add(
        "serve",
        cmd_serve,
        "the receiving half: scorer and store, fed by `loopmon collect` processes",
        "Bind ENDPOINT and store what any number of `loopmon collect` processes send.\n"
        "Endpoints: ipc://PATH or tcp://127.0.0.1:PORT; any other address needs --keys.",
    )
    p.add_argument("--bind", metavar="ENDPOINT", required=True, help="where collectors connect, e.g. ipc:///tmp/loopmon.sock")
    p.add_argument("--keys", metavar="DIR", help="CurveZMQ keys from `loopmon keys generate` (required beyond loopback)")
    db_arg(p, ".loopmon/loopmon.db under the current folder")
    p.add_argument("--headless", action="store_true", help="no live view: one JSON line per event on stdout")
    p.add_argument(
        "--metrics", metavar="ADDR", help="serve Prometheus metrics at http://ADDR/metrics (PORT or HOST:PORT, loopback only)"
    )
    duration_arg(p)

    p = add(
        "collect",
        cmd_collect,
        "the sending half: watch a repo and send its events to `loopmon serve`",
        "Watch one repository and send its events to a `loopmon serve` at ENDPOINT.",
    )
    repo_arg(p)
    p.add_argument("--connect", metavar="ENDPOINT", required=True, help="the serve side's endpoint")
    p.add_argument("--keys", metavar="DIR", help="CurveZMQ keys (collector.key_secret and server.key) for a keyed server")
    duration_arg(p)

    p = add(
        "backfill",
        cmd_backfill,
        "replay a repository's history into the store (scored as if watched live)",
        "Replay committed history through the collector, bus and scorer into the store.\n"
        "Running it again adds nothing twice.",
    )
    repo_arg(p)
    db_arg(p)
    p.add_argument("--rev", default="--all", help="what to replay: a branch, tag or range (default: every ref)")
    p.add_argument("--since", metavar="SHA", help="only commits after this one")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add(
        "simulate",
        cmd_simulate,
        "play a simulated agent loop into a git repository",
        "Create (or continue) a real git repository and play supervisor and engineer turns\n"
        "into it, as a real loop would. Seeded: the same seed gives the same history.",
    )
    repo_arg(p)
    p.add_argument("--scenario", default="mixed", help="productive, dwell, stuck-rebase, bulky-artifact or mixed (default)")
    p.add_argument("--iterations", type=int, default=10, help="iterations to play (default 10)")
    p.add_argument("--pace", type=float, default=0.0, help="seconds between turns; 0 = as fast as git allows")
    p.add_argument("--seed", type=int, default=0)

    p = add(
        "demo",
        cmd_demo,
        "a simulated loop in a temporary repo, monitored live: the first thing to try",
        "Make a temporary repository, play a simulated loop into it and monitor it live.\n"
        "Stops by itself after --iterations (about a minute by default) or at Ctrl-C,\n"
        "and says where the database is.",
    )
    db_arg(p, "a temporary folder")
    p.add_argument("--iterations", type=int, default=20, help="iterations to play (default 20, about a minute)")
    p.add_argument("--pace", type=float, default=1.5, help="seconds between turns (default 1.5)")
    p.add_argument("--scenario", default="mixed", help="the simulator's scenario (default mixed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--headless", action="store_true", help="no live view: one JSON line per event on stdout")
    p = add(
        "keys",
        cmd_keys,
        "make CurveZMQ keys for a server that listens beyond this machine",
        "loopmon keys generate DIR: a key pair for the server, one for collectors, and\n"
        "DIR/authorized/ with the collector public keys the server accepts.",
    )
    p.add_argument("action", choices=["generate"])
    p.add_argument("dir", metavar="DIR")

    p = add(
        "query",
        cmd_query,
        "ask the store: iterations, dwell, alerts, ledger, hubs, search, sql",
        "Ready views of the store, read-only (safe while the monitor writes). Each prints a\n"
        "table; --json or --csv give every column, exactly as stored. With several repos in\n"
        "one --db, --repo names one: its folder, or its repo id.",
    )
    views = p.add_subparsers(dest="view", metavar="VIEW", required=True)

    def view(name: str, help: str) -> argparse.ArgumentParser:
        v = views.add_parser(name, help=help, description=help)
        v.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help="settings file (see loopmon --help)")
        repo_arg(v)
        db_arg(v)
        fmt = v.add_mutually_exclusive_group()
        fmt.add_argument("--json", action="store_true", help="a JSON array of objects")
        fmt.add_argument("--csv", action="store_true", help="CSV with a header line")
        return v

    v = view("iterations", "scores, bucket, focus and key changes of each iteration")
    v.add_argument("--last", type=int, metavar="N", help="only the last N iterations (after the other filters)")
    v.add_argument("--bucket", choices=["low", "medium", "high"])
    v.add_argument("--focus", metavar="ID", help="only iterations on this focus")
    view("dwell", "dwell per focus and across all foci: value, tier, longest streak")
    v = view("alerts", "alerts in the order they were raised")
    v.add_argument("--since", metavar="TIME", help="an ISO date or time (UTC), or an age: 30m, 2h, 1d")
    v.add_argument("--kind", metavar="K", help="one alert kind, e.g. dwell_tier, git_state, stalled_loop")
    view("ledger", "ledger items: status, attempts, last change")
    view("hubs", "evidence hubs per initiative: open hubs, files, bytes, last update")
    v = view("search", "full-text search over commit and alert messages")
    v.add_argument("text", metavar="TEXT", help="words that must all appear")
    v = view("sql", "one SELECT on a read-only connection (writes are refused)")
    v.add_argument("statement", metavar="SQL")

    p = add(
        "report",
        cmd_report,
        "write the iteration audit (Markdown) for a window of iterations",
        "The iteration audit, from the store: summary, per-iteration scores with reasons and\n"
        "key changes, the aggregate plot, trend, dwell and git-state findings, prompt changes.\n"
        "--from/--to are the loop's iteration numbers (loopmon's index where the loop has none).",
    )
    repo_arg(p)
    db_arg(p)
    p.add_argument("--from", dest="first", type=int, metavar="N", help="first iteration (default: the first)")
    p.add_argument("--to", dest="last", type=int, metavar="M", help="last iteration (default: the latest)")
    p.add_argument("-o", "--output", metavar="FILE.md", help="write here instead of stdout")

    p = add(
        "gate",
        cmd_gate,
        "for a loop driver between turns: exit 0 to go on, non-zero to stop",
        "Exit 0: go on. 3: a dwell tier at or above --max-tier is active. 4: the git state is\n"
        "broken (rebase or merge in progress, stale index.lock). 5: the loop is stalled (lease\n"
        "expired with no commit, or silence while the baton says running). 2: usage error.\n"
        "With several, the first of 4, 5, 3. Reasons go to stderr; --json prints the verdict.\n\n"
        "In a bash loop, between turns (works under set -e too):\n"
        '  gate=0; loopmon gate --repo "$REPO" || gate=$?\n'
        '  [ "$gate" -eq 0 ] || { echo "loopmon gate: stop (exit $gate)" >&2; break; }',
    )
    repo_arg(p)
    db_arg(p)
    p.add_argument("--focus", metavar="ID", help="check this focus's dwell (and the global count) only")
    p.add_argument("--max-tier", default="3", metavar="TIER", help="stop at this dwell tier or above (default 3)")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON on stdout")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    if argv is None:  # a loopmon process of its own (not a call from Python code)
        from monitor.gc_tuning import tune_for_streaming

        tune_for_streaming()
    try:
        return args.func(args)
    except ConfigError as err:
        _err(f"bad configuration: {err}")
        return EXIT_USAGE
    except UsageError as err:
        _err(str(err))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
