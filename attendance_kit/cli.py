"""The `attendance-kit` command: a thin layer over the functions the notebooks call."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg

from . import bench, demo, docs, export, migrations, realtime, term, verification
from .bench import realtime as bench_realtime_module
from .bench import rls, startup, triggers
from .connection import URL_VARIABLE, connect, redacted, require_logical_decoding
from .errors import KitError, one_line
from .paths import NOTEBOOKS_DIR
from .realtime import broadcasts, tokens
from .server import KIT_CONF, Cluster


def say(message: str) -> None:
    """Progress goes to stderr, so stdout carries only results (e.g. the URL, for `$(...)`)."""
    print(message, file=sys.stderr)


def error_line(error: KitError, database_url: str | None) -> str:
    """The error's message; a fix that is a kit command names the --database-url the user gave (password
    hidden), so that the fix reaches the database that needs it, not the default one."""
    if error.command is None or not database_url:
        return str(error)
    return error.message.format(command=f"`./kit {error.command} --database-url '{redacted(database_url)}'`")


def migrate_and_load_demo(url: str | None, demo_data: bool, demo_term: bool = False) -> None:
    with connect(url) as conn:
        applied = migrations.migrate(conn)
        say(f"applied {', '.join(applied)}" if applied else "migrations: nothing to apply")
        if demo_data or demo_term:
            demo.load_demo_data(conn)
            say("demo data loaded (personas: see README)")
        if demo_term:
            loaded = term.load_demo_term(conn, progress=show_progress("demo term: sessions"))
            say("demo term loaded" if loaded else "demo term: already loaded")
        try:
            require_logical_decoding(conn)
        except KitError as missing:  # only the realtime steps need it: a note, not an error
            say(f"note: {missing}")


def show_progress(label: str) -> Callable[[int, int], None]:
    """A one-line progress bar on stderr, redrawn in place."""

    def draw(done: int, total: int) -> None:
        filled = round(30 * done / total)
        end = "\n" if done == total else ""
        print(f"\r{label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}", end=end, file=sys.stderr,
              flush=True)

    return draw


def db_up(args: argparse.Namespace) -> None:
    cluster = Cluster()
    with cluster.lock:  # held until it is migrated: a command waiting for it finds it so
        url = cluster.up(port=args.port)
        if args.port is not None:
            say(f"port {args.port} is now this clone's: later `./kit db up` and `./kit lab` use it too "
                f"(it is kept in {cluster.data_dir / KIT_CONF})")
        migrate_and_load_demo(url, demo_data=True)
    print(url)


def db_reset(args: argparse.Namespace) -> None:
    cluster = Cluster()
    with cluster.lock:
        url = cluster.reset()
        say(f"the kit's cluster started over: every database in {cluster.data_dir} was dropped")
        migrate_and_load_demo(url, demo_data=True)
    print(url)


def db_down(args: argparse.Namespace) -> None:
    say("stopped" if Cluster().down() else "not running")


def db_url(args: argparse.Namespace) -> None:
    cluster = Cluster()
    if cluster.running_pid() is None:
        raise KitError("the kit's cluster is not running: start it with `./kit db up`")
    print(cluster.url)


def migrate(args: argparse.Namespace) -> None:
    migrate_and_load_demo(args.database_url, demo_data=args.demo_data, demo_term=args.demo_term)


def verify_command(args: argparse.Namespace) -> int:
    """Exit 0 when the database matches the access contract and the lints are clean; else one line each."""
    try:
        with connect(args.database_url) as conn:
            started = time.perf_counter()
            result = verification.verify(conn)
            seconds = time.perf_counter() - started
    except (KitError, psycopg.Error) as error:
        if args.format == "json":  # a reader of stdout gets an answer too; the one-line error goes to stderr
            message = error_line(error, args.database_url) if isinstance(error, KitError) else one_line(error)
            print(json.dumps({"ok": False, "error": message}))
        raise
    problems = result.problems()
    if args.format == "json":
        print(json.dumps({"ok": result.ok, "checks": len(result.matrix), "seconds": round(seconds, 3),
                          "problems": problems}))
    else:
        print(result.table())
        for line in problems:
            print(line)
        verdict = "as the contract says" if result.matrix["ok"].all() else "NOT as the contract says"
        print(f"{len(result.matrix)} checks {verdict}; {len(result.findings)} lint findings ({seconds:.2f} s)")
    return 0 if result.ok else 1


def listen(args: argparse.Namespace) -> None:
    """Print the events `--as` may see, as they are committed, until --seconds pass (or Ctrl-C)."""
    tables = ", ".join(args.table) if args.table else "every published table"
    until = f"for {args.seconds:g} s" if args.seconds is not None else "until Ctrl-C"
    events = realtime.listen(
        args.who, database_url=args.database_url, tables=args.table or (), event=args.event, filter=args.filter,
        select=args.select.split(",") if args.select else None, seconds=args.seconds,
        on_listening=lambda: say(f"listening as {args.who} to {args.event if args.event != '*' else 'every'} "
                                 f"change of {tables}{f' where {args.filter}' if args.filter else ''}, {until}"),
        on_lost=lambda lost: say(f"{lost}; {realtime.RECONNECTING}"),
        on_back=lambda seconds: say(f"the database is back after {seconds:.1f} s: listening again"))
    for event in events:
        print(realtime.render_event(event, args.format), flush=True)


def realtime_serve(args: argparse.Namespace) -> None:
    """Supabase Realtime's WebSocket endpoint for the database, until Ctrl-C; how to connect, on stderr."""
    from .realtime.gateway import Gateway  # the websockets server: loaded only for this command

    gateway = Gateway(args.database_url, host=args.host, port=args.port, jwt_secret=args.jwt_secret)

    def listening() -> None:
        with connect(args.database_url) as conn:
            anon, sam = (tokens.token_for(conn, who, args.jwt_secret, expires_in=args.expires_in)
                         for who in ("anon", demo.SAM.email))
        secret = "Supabase's local default" if args.jwt_secret == tokens.DEFAULT_JWT_SECRET else "--jwt-secret"
        say(f"Realtime gateway at {gateway.url} (Supabase's clients add /websocket), publications "
            f"{gateway.publication} and {broadcasts.PUBLICATION}; tokens signed with {secret} JWT secret "
            f"{args.jwt_secret}")
        say(f"anon token: {anon}")
        say(f"{demo.SAM.email} token: {sam}")
        say("other personas: `./kit realtime token --as EMAIL`; Ctrl-C stops the gateway")

    asyncio.run(gateway.serve(on_listening=listening))


def realtime_token(args: argparse.Namespace) -> None:
    """A signed JWT for a persona, as Supabase Auth would issue it."""
    with connect(args.database_url) as conn:
        print(tokens.token_for(conn, args.who, args.jwt_secret, expires_in=args.expires_in))


def export_supabase(args: argparse.Namespace) -> None:
    """Write the Supabase CLI project; print each file written."""
    written = export.export_supabase(Path(args.directory))
    for path in written:
        print(path)
    say(f"{len(written)} files written" if written else "the export is current: nothing written")


def bench_startup(args: argparse.Namespace) -> None:
    print(bench.render(startup.startup(runs=args.runs), args.format))


def bench_rls(args: argparse.Namespace) -> None:
    print(bench.render(rls.rls(runs=args.runs, url=args.database_url), args.format))


def bench_triggers(args: argparse.Namespace) -> None:
    print(bench.render(triggers.triggers(runs=args.runs, url=args.database_url), args.format))


def bench_realtime(args: argparse.Namespace) -> None:
    result = bench_realtime_module.realtime(seconds=args.seconds, database_url=args.database_url)
    print(bench.render(result, args.format))


def bench_gateway(args: argparse.Namespace) -> None:
    from .bench import broadcast, gateway  # the websockets client: loaded only for this command

    if args.broadcast:
        result = broadcast.broadcast(clients=args.clients or 10_000, rate=args.rate or 1_000,
                                     seconds=args.seconds or 5.0, database_url=args.database_url)
    elif args.soak:
        result = gateway.soak(clients=args.clients or 500, rate=args.rate or 1_000, seconds=args.seconds or 300.0,
                              database_url=args.database_url)
    else:
        result = gateway.gateway(clients=args.clients or 500, rates=(args.rate,) if args.rate else (1000, 3000),
                                 seconds=args.seconds or 5.0, database_url=args.database_url)
    print(bench.render(result, args.format))


def docs_command(args: argparse.Namespace) -> None:
    print(docs.build_site(Path(args.output) if args.output else docs.SITE_DIR))


def lab(args: argparse.Namespace, jupyter_args: Sequence[str]) -> None:
    url = args.database_url or os.environ.get(URL_VARIABLE)
    if url:
        say(f"the lab's database: {redacted(url)}")
        migrate_and_load_demo(url, demo_data=True)
    else:
        cluster = Cluster()
        with cluster.lock:  # let go before JupyterLab starts: other commands wait only for the set-up
            url = cluster.up(port=args.db_port)
            say(f"the lab's database: {redacted(url)} (`./kit db url` prints it whole), the kit's PostgreSQL cluster "
                f"in {cluster.data_dir}. It keeps running when JupyterLab stops: `./kit db down` stops it, "
                "`./kit db reset` starts it over.")
            migrate_and_load_demo(url, demo_data=True)
    say("each notebook makes a database of its own on this server (lesson_00 ... lesson_09); the main one is "
        "yours to explore. Start with notebooks/00_setup.ipynb.")
    env = dict(os.environ, **{URL_VARIABLE: url, "PLOOMBER_STATS_ENABLED": "false"})
    command = [sys.executable, "-m", "jupyter", "lab", f"--notebook-dir={NOTEBOOKS_DIR}", *jupyter_args]
    if os.geteuid() == 0:  # e.g. in a container: JupyterLab refuses root unless told
        command.append("--allow-root")
    os.execvpe(command[0], command, env)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="attendance-kit", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)

    db = commands.add_parser("db", help="the embedded PostgreSQL cluster of this project")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    up = db_commands.add_parser("up", help="start (or reuse) the cluster, migrate, load demo data; print its URL")
    up.add_argument("--port", type=int, help="port on 127.0.0.1 (default: the cluster's, first a free one)")
    up.set_defaults(run=db_up)
    db_commands.add_parser("down", help="stop the cluster (data is kept)").set_defaults(run=db_down)
    db_commands.add_parser("reset", help="start the cluster over: drop every database in it, migrate, load demo "
                                         "data; print its URL").set_defaults(run=db_reset)
    db_commands.add_parser("url", help="print the running cluster's URL").set_defaults(run=db_url)

    mig = commands.add_parser("migrate", help="apply sql/ migrations to a database")
    mig.add_argument("--database-url", help=f"default: ${URL_VARIABLE}, else the embedded cluster")
    mig.add_argument("--demo-data", action="store_true", help="also load the personas (sql/seed.sql)")
    mig.add_argument("--demo-term", action="store_true",
                     help="also generate a term of sessions for analytics (implies --demo-data)")
    mig.set_defaults(run=migrate)

    ls = commands.add_parser("listen", help="print the realtime events a user may see, as they happen")
    ls.add_argument("--as", dest="who", required=True, help="the subscriber: a UUID or email, anon, service_role")
    ls.add_argument("--database-url", help=f"default: ${URL_VARIABLE}, else the embedded cluster")
    ls.add_argument("--table", action="append", help="a published table (repeatable; default: all)")
    ls.add_argument("--event", default="*", help="INSERT, UPDATE, DELETE or * (default)")
    ls.add_argument("--filter", help="Supabase's column filters, e.g. session_id=eq.<uuid>,status=not.eq.absent "
                    "(one --table)")
    ls.add_argument("--select", help="the columns events carry besides the primary key, comma-separated "
                    "(one --table)")
    ls.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    ls.add_argument("--format", choices=["jsonl", "table"], default="jsonl")
    ls.set_defaults(run=listen)

    rt = commands.add_parser("realtime", help="Supabase Realtime's WebSocket protocol for Supabase's own clients")
    rt_commands = rt.add_subparsers(dest="realtime_command", required=True)
    serve = rt_commands.add_parser("serve", help="the Realtime gateway: Supabase's clients subscribe to the "
                                                 "database's changes, under RLS (until Ctrl-C)")
    serve.add_argument("--port", type=int, default=4000, help="default: 4000, as Supabase's local stack")
    serve.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1 (this machine only)")
    token = rt_commands.add_parser("token", help="print a signed JWT for a persona (what Supabase Auth issues)")
    token.add_argument("--as", dest="who", required=True, help="a user's UUID or email, anon, service_role")
    for command, run in ((serve, realtime_serve), (token, realtime_token)):
        command.add_argument("--database-url", help=f"default: ${URL_VARIABLE}, else the embedded cluster")
        command.add_argument("--jwt-secret", default=tokens.DEFAULT_JWT_SECRET,
                             help="the project's JWT secret (default: Supabase's local stack's)")
        command.add_argument("--expires-in", type=float, default=3600, help="tokens' lifetime in seconds")
        command.set_defaults(run=run)

    bn = commands.add_parser("bench", help="benchmarks: figures measured side by side in one run")
    bench_commands = bn.add_subparsers(dest="bench_command", required=True)
    benchmarks = [  # name, help, what it runs, its own option (a flag, a type, a default, a help)
        ("startup", "a new embedded cluster: to accepting connections, to migrated", bench_startup,
         ("--runs", int, 3, "fresh clusters to time (median)")),
        ("triggers", "the analytics trigger: bulk and per-check-in cost, kit vs draft", bench_triggers,
         ("--runs", int, 5, "runs per measurement (medians)")),
        ("realtime", "commit-to-delivery latency and changes/s, 1 to 500 subscribers", bench_realtime,
         ("--seconds", float, 5.0, "how long each load runs")),
        ("rls", "persona reads under RLS vs the owner's hand-filtered reads, 1M rows", bench_rls,
         ("--runs", int, 101, "alternating runs per query (medians)")),
        ("gateway", "500 WebSocket clients through the Realtime gateway vs the realtime client in-process, same "
                    "load (--broadcast: 10,000 in lectures, Broadcast from Database vs postgres_changes)",
         bench_gateway, ("--seconds", float, None, "how long each load runs (default: 5; with --soak 300)"),
         ("--broadcast", bool, False, "private lecture topics, Broadcast from Database and Presence, beside "
                                      "postgres_changes at the same load"),
         ("--soak", bool, False, "one long run (500 clients, 1,000/s, 5 minutes): the gateway's resident memory at "
                                 "the start, each minute and the end"),
         ("--clients", int, None, "WebSocket clients (default: 500; with --broadcast 10,000)"),
         ("--rate", int, None, "changes/s offered (default: 1,000 then 3,000; with --broadcast 1,000 check-ins/s)")),
    ]
    for name, description, run, *options in benchmarks:
        command = bench_commands.add_parser(name, help=description)
        for flag, kind, default, flag_help in options:
            if kind is bool:
                command.add_argument(flag, action="store_true", help=flag_help)
            else:
                command.add_argument(flag, type=kind, default=default, help=flag_help)
        if name != "startup":  # startup makes clusters of its own
            command.add_argument("--database-url", help="server for the scratch databases (default: the kit's)")
        command.add_argument("--format", choices=["table", "json"], default="table")
        command.set_defaults(run=run)

    ex = commands.add_parser("export", help="the kit in another tool's layout")
    ex_commands = ex.add_subparsers(dest="export_command", required=True)
    sb = ex_commands.add_parser("supabase", help="a Supabase CLI project: migrations, seed.sql, pgTAP tests of "
                                                 "the access contract (for supabase db push / test db)")
    sb.add_argument("directory", help="the project directory (supabase/ is written inside it)")
    sb.set_defaults(run=export_supabase)

    ver = commands.add_parser("verify", help="check the access contract for real, and the catalog lints")
    ver.add_argument("--database-url", help=f"default: ${URL_VARIABLE}, else the embedded cluster")
    ver.add_argument("--format", choices=["table", "json"], default="table")
    ver.set_defaults(run=verify_command)

    dc = commands.add_parser("docs", help="the walkthrough as a static site: README, docs/, the notebooks as "
                                          "committed; print its front page")
    dc.add_argument("--output", help="the site's folder (default: build/docs in the clone)")
    dc.set_defaults(run=docs_command)

    jl = commands.add_parser("lab", help="database up, then JupyterLab on notebooks/ (extra args go to jupyter)")
    jl.add_argument("--database-url", help=f"default: ${URL_VARIABLE}, else the embedded cluster")
    jl.add_argument("--db-port", type=int, help="port for the embedded cluster (--port is JupyterLab's)")
    jl.set_defaults(run=lab)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = parser().parse_known_args(argv)
    if extra and args.run is not lab:
        parser().error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.run is lab:
            lab(args, extra)
        else:
            return args.run(args) or 0
    except KitError as error:
        print(f"attendance-kit: error: {error_line(error, getattr(args, 'database_url', None))}", file=sys.stderr)
        return 1
    except psycopg.Error as error:  # the database refused: say what it said, in one line
        print(f"attendance-kit: error: the database said: {one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`listen | head`): stop quietly, as a Unix filter does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
