"""``task-scheduler``: run the service and operate it from a shell.

Every command takes ``--database-url`` (else ``DATABASE_URL`` / ``.env``), every listing
takes ``--json``. Exit codes: 0 success, 1 the command failed (a task not found, a tool
error, an unreachable database, an unhealthy service), 2 bad usage or configuration.
Errors are one line on stderr, never a traceback, and never show a password.

``task-scheduler`` with no command (or ``task-scheduler --demo``) is ``task-scheduler run``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

from scheduler_service.cli.arguments import (
    ArgumentParser,
    UsageError,
    bounded_int,
    identifier,
    port,
    seconds,
)
from scheduler_service.cluster.health import first_line
from scheduler_service.config import (
    ConfigError,
    Settings,
    load_settings,
    redact_url,
    warn_unknown_variables,
)
from scheduler_service.logs import configure_logging
from scheduler_service.logs.escape import escape, escape_json
from scheduler_service.tasks.inputs import PAUSE_NOTE_CHARS

log = logging.getLogger("scheduler_service.cli")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
TASK_STATUSES = ("scheduled", "paused", "completed", "failed", "cancelled", "missed")
CELL_WIDTH = 48
POSTGRES_DRIVERS = ("asyncpg", "psycopg", "psycopg_binary")
MAX_RUNS_LISTED = 1000
MAX_RUN_FOR_S = 366 * 24 * 3600.0
DEFAULT_METRICS_HOST = "127.0.0.1"


# -- output -------------------------------------------------------------------------------
# Task names, notification texts and errors are written by users, models and tools: what
# reaches the operator's terminal has its control characters escaped (a name could
# otherwise retitle the window, clear the screen, or forge and hide rows).
def _cell(value: Any) -> str:
    text = "-" if value is None or value == "" else str(value)
    text = escape(" ".join(text.split()))
    return text if len(text) <= CELL_WIDTH else text[: CELL_WIDTH - 1] + "…"


def terminal_text(text: str) -> str:
    """``text`` with control characters escaped in each of its lines."""
    return "\n".join(escape(line) for line in text.split("\n"))


def json_text(data: Any) -> str:
    """``--json`` output: indented, non-ASCII kept, every control character escaped."""
    return escape_json(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A plain aligned table: ``columns`` are (key, heading) pairs."""
    cells = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    headings = [heading for _, heading in columns]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headings)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headings, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def emit(args: argparse.Namespace, data: Any, text: Callable[[], str]) -> None:
    """JSON with ``--json``, else the human rendering."""
    if getattr(args, "json", False):
        print(json_text(data))
    else:
        print(terminal_text(text()))


def details(data: dict[str, Any], keys: Sequence[str]) -> str:
    width = max(len(k) for k in keys)
    return "\n".join(f"{k.ljust(width)}  {_cell(data.get(k))}" for k in keys if k in data)


TASK_COLUMNS = [
    ("task_id", "ID"),
    ("user_id", "USER"),
    ("name", "NAME"),
    ("status", "STATUS"),
    ("schedule", "SCHEDULE"),
    ("next_run_time", "NEXT RUN"),
    ("last_status", "LAST"),
    ("pause_note", "NOTE"),
]
RUN_COLUMNS = [
    ("run_id", "RUN"),
    ("kind", "KIND"),
    ("fire_time", "FIRE TIME"),
    ("attempt", "TRY"),
    ("status", "STATUS"),
    ("duration_ms", "MS"),
    ("error", "ERROR"),
]
NOTIFICATION_COLUMNS = [
    ("id", "ID"),
    ("conversation_id", "CONVERSATION"),
    ("created_at", "CREATED"),
    ("status", "STATUS"),
    ("title", "TITLE"),
    ("message", "MESSAGE"),
]


# -- arguments ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url",
        default=argparse.SUPPRESS,
        help="database to use (overrides DATABASE_URL); postgres:// URLs are accepted",
    )
    listing = ArgumentParser(add_help=False)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")

    parser = ArgumentParser(
        prog="task-scheduler",
        description="Run the task scheduler service, or inspect and operate it.",
        epilog="Without a command, runs the service (`task-scheduler --demo` shows it working).",
    )
    parser.add_argument("--database-url", default=None, help=argparse.SUPPRESS)
    _run_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="run the service in the foreground")
    _run_options(run)

    tool = sub.add_parser(
        "tool",
        parents=[common, listing],
        help="call a scheduler_tool operation as a user",
        description="Call one operation, e.g. "
        "`task-scheduler tool get_tasks --user u1` or "
        '`task-scheduler tool get_task \'{"task_id": "task_…"}\' --user u1`.',
    )
    tool.add_argument(
        "operation", type=identifier(100), help="e.g. create_task, get_tasks, preview_schedule"
    )
    tool.add_argument("kwargs", nargs="?", default=None, help="the operation's kwargs as JSON")
    tool.add_argument("--user", required=True, type=USER, help="the user the call acts for")
    tool.add_argument(
        "--conversation", default=None, type=USER, help="the conversation it belongs to"
    )
    tool.add_argument(
        "--tool",
        default="scheduler_tool",
        type=identifier(100),
        help="tool name (default scheduler_tool)",
    )

    tasks = sub.add_parser("tasks", parents=[common, listing], help="list tasks of every user")
    tasks.add_argument("--user", default=None, type=USER, help="only this user's tasks")
    tasks.add_argument("--status", choices=TASK_STATUSES, default=None, help="only this status")

    task = sub.add_parser(
        "task", parents=[common, listing], help="one task, its runs and next runs"
    )
    task.add_argument("task_id", type=TASK_ID)

    runs = sub.add_parser("runs", parents=[common, listing], help="a task's runs, newest first")
    runs.add_argument("task_id", type=TASK_ID)
    runs.add_argument(
        "--limit",
        type=bounded_int(1, MAX_RUNS_LISTED),
        default=20,
        help=f"how many (default 20, at most {MAX_RUNS_LISTED})",
    )

    notes = sub.add_parser(
        "notifications", parents=[common, listing], help="pending notifications (not marked)"
    )
    notes.add_argument("--conversation", default=None, type=USER, help="only this conversation's")
    notes.add_argument("--all", action="store_true", help="include displayed ones")

    for action, words in (
        ("pause", "pause a task"),
        ("resume", "resume a paused task"),
        ("run-now", "run a task once now in a worker (waits for the result)"),
        ("cancel", "cancel a task (its history is kept)"),
    ):
        p = sub.add_parser(action, parents=[common, listing], help=f"{words}, as operator")
        p.add_argument("task_id", type=TASK_ID)
        if action == "pause":
            p.add_argument(
                "--note",
                default=None,
                type=identifier(PAUSE_NOTE_CHARS),
                help="why it is paused (shown by `task` and get_task until it is resumed)",
            )
        if action == "run-now":
            p.add_argument(
                "--no-wait",
                dest="wait",
                action="store_false",
                help="return once a worker has the run queued (the result arrives as a "
                "notification)",
            )

    backfill = sub.add_parser(
        "backfill",
        parents=[common, listing],
        help="run a task's past fire times that never ran, once each, as operator",
        description="Queue the task's fire times in [--from, --to) that have no run yet "
        "(e.g. while it was paused); workers run them. Times without an offset are in the "
        "task's timezone.",
    )
    backfill.add_argument("task_id", type=TASK_ID)
    backfill.add_argument(
        "--from", dest="start", required=True, help="start of the window (ISO 8601, included)"
    )
    backfill.add_argument(
        "--to", dest="end", required=True, help="end of the window (ISO 8601, excluded; not future)"
    )
    backfill.add_argument(
        "--max", dest="max_runs", type=bounded_int(1, 10_000), default=None,
        help="queue at most this many (default: the LIMITS__MAX_BACKFILL_RUNS setting, 100)",
    )  # fmt: skip

    db = sub.add_parser("db", help="database schema: upgrade, current")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    db_sub.add_parser("upgrade", parents=[common], help="migrate the schema to head")
    db_sub.add_parser("current", parents=[common, listing], help="show the schema revision")

    health = sub.add_parser(
        "health",
        parents=[common, listing],
        help="exit 0 only if the database is reachable, at head, and a worker leads",
    )
    health.add_argument(
        "--worker",
        default=None,
        metavar="ID",
        type=identifier(300),
        help="also require this worker to be alive",
    )

    mcp = sub.add_parser(
        "mcp",
        parents=[common],
        help="serve the scheduler to an MCP host over stdio",
        description="Serve scheduler_tool and get_notifications over MCP (stdio), acting "
        "for one user and conversation. A client: tasks run in the workers "
        "(`task-scheduler run`), unless --worker.",
    )
    mcp.add_argument("--user", required=True, type=USER, help="the user every call acts for")
    mcp.add_argument("--conversation", required=True, type=USER, help="the conversation notified")
    mcp.add_argument(
        "--worker",
        action="store_true",
        help="also run tasks in this process (default: a client; `task-scheduler run` does)",
    )

    check = sub.add_parser(
        "check",
        parents=[common, listing],
        help="verify the store's invariants (exit 1 if one fails); --repair puts them right",
    )
    check.add_argument(
        "--repair",
        action="store_true",
        help="make jobs agree with tasks and hand dead workers' runs to recovery",
    )

    sub.add_parser(
        "workers",
        parents=[common, listing],
        help="the live worker processes: role, tools, leader, runs in flight",
    )
    return parser


USER = identifier(200)  # user and conversation ids: the columns hold 200 characters
TASK_ID = identifier(200)


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--demo", action="store_true", help="schedule and run example tasks")
    parser.add_argument(
        "--run-for",
        type=seconds(MAX_RUN_FOR_S),
        default=None,
        metavar="SECONDS",
        help="stop after this long",
    )
    parser.add_argument(
        "--metrics-port", type=port, default=None, metavar="PORT", help="serve /metrics here"
    )
    parser.add_argument(
        "--metrics-host",
        default=DEFAULT_METRICS_HOST,
        type=identifier(253),
        metavar="ADDRESS",
        help=f"the address /metrics listens on (default {DEFAULT_METRICS_HOST}; "
        "0.0.0.0 for every interface)",
    )


# -- commands ------------------------------------------------------------------------------
def settings_for(args: argparse.Namespace, *, warn: bool = False, **scheduler: Any) -> Settings:
    """The settings, with ``--database-url`` over ``DATABASE_URL``. ``warn``: name the
    mistyped variables here (commands that start no service, which would otherwise)."""
    overrides: dict[str, Any] = {}
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    if warn:
        warn_unknown_variables(log)
    settings = load_settings(**overrides)
    if scheduler:
        settings.scheduler = settings.scheduler.model_copy(update=scheduler)
    return settings


@contextlib.asynccontextmanager
async def operator_service(args: argparse.Namespace, *, migrate: bool = False) -> Any:
    """A client: it serves calls, never leads, claims or executes a run (manual runs go
    to the workers). Without ``migrate`` (every command but ``tool``) it never creates
    or migrates a database: a mistyped path is a one-line error."""
    from scheduler_service.cli.operator import Operator
    from scheduler_service.service import SchedulerService

    settings = settings_for(args, log_level="WARNING")
    async with SchedulerService(settings, role="client", migrate=migrate) as service:
        yield Operator(service)


def freeze_startup_heap() -> None:
    """Take what start-up allocated (imported modules, the service) out of the cyclic
    garbage collector: ``gc.collect(); gc.freeze()``.

    A full collection walks every tracked object while the whole process waits; in a
    burst of runs the heap grows, a full collection runs at every 25% of growth, and the
    start-up objects (~100,000) were a large part of each walk: with 10,000 runs due at
    once the longest walk took 130–155 ms, 75–85 ms frozen (docs/performance.md).
    It is a process-wide setting, so only ``run`` makes it (this process is the
    service's own); a host embedding ``SchedulerService`` decides for its process
    (docs/deployment.md)."""
    gc.collect()
    gc.freeze()


async def cmd_run(args: argparse.Namespace) -> int:
    from scheduler_service.cli.demo import run_demo, show_state
    from scheduler_service.service import SchedulerService

    settings = settings_for(args)
    configure_logging(settings.scheduler.log_level, settings.scheduler.log_format)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    service = SchedulerService(settings)
    if args.metrics_port is not None:
        serve_metrics(service, args.metrics_host, args.metrics_port)
    async with service:
        freeze_startup_heap()
        where = settings.database.redacted
        print(f"scheduler running on {where} — Ctrl-C to stop", flush=True)
        if args.demo:
            await run_demo(service)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.run_for):
                await stop.wait()
        if args.demo:
            await show_state(service)
        print("stopping…", flush=True)
    return EXIT_OK


def serve_metrics(service: Any, host: str, port_: int) -> None:
    """Serve /metrics before the service starts: a port in use (or an address this host
    does not have) is a one-line usage error, not a database problem."""
    from scheduler_service.metrics import SchedulerMetrics

    try:
        SchedulerMetrics().bind(service).serve(port_, host)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            reason = "the port is already in use; choose another --metrics-port"
        raise UsageError(
            f"--metrics-host/--metrics-port: cannot listen on {host}:{port_}: {reason}"
        ) from None
    log.info("metrics on http://%s:%d/metrics", host, port_)


async def cmd_tool(args: argparse.Namespace) -> int:
    from scheduler_service.tools import ToolContext

    context = ToolContext(user_id=args.user, conversation_id=args.conversation)
    async with operator_service(args, migrate=True) as op:
        result = await op.service.tools.call(
            args.tool, args.operation, args.kwargs, context=context
        )
    emit(args, result, lambda: _tool_text(result))
    return EXIT_OK


def _tool_text(result: dict[str, Any]) -> str:
    if isinstance(result.get("tasks"), list):
        return table(result["tasks"], [c for c in TASK_COLUMNS if c[0] != "user_id"]) + (
            f"\n{result.get('message', '')}"
        )
    message = result.get("message")
    rest = {k: v for k, v in result.items() if k != "message"}
    body = json_text(rest)
    return f"{message}\n{body}" if message else body


async def cmd_tasks(args: argparse.Namespace) -> int:
    async with operator_service(args) as op:
        rows = await op.tasks(user=args.user, status=args.status)
    emit(args, rows, lambda: table(rows, TASK_COLUMNS) + f"\n{len(rows)} task(s)")
    return EXIT_OK


async def cmd_task(args: argparse.Namespace) -> int:
    async with operator_service(args) as op:
        task = await op.task(args.task_id)

    def text() -> str:
        keys = [
            "task_id", "name", "user_id", "conversation_id", "status", "schedule", "timezone",
            "execution_mode", "tool_name", "operation", "task_description", "run_count",
            "success_count", "failure_count", "last_run_time", "last_status", "last_error",
            "notify", "last_notified_at", "pause_note",
        ]  # fmt: skip
        parts = [details(task, keys)]
        if (budget := task.get("daily_token_budget")) is not None:
            parts.append(budget_line(budget, width=max(map(len, keys))))
        parts += ["", "next runs:"]
        parts += [f"  {t}" for t in task["next_runs"]] or ["  (none)"]
        parts += ["", "recent runs:", table(task.get("recent_runs", []), RUN_COLUMNS)]
        return "\n".join(parts)

    emit(args, task, text)
    return EXIT_OK


def budget_line(budget: dict[str, Any], *, width: int) -> str:
    """The owner's daily token budget, one line of ``task``: used, limit, reset."""
    state = "spent, orchestrated runs skipped" if budget["spent"] else "not spent"
    return (
        f"{'tokens_today'.ljust(width)}  {budget['used_today']} of {budget['daily_limit']} "
        f"({state}; resets {budget['resets_at']})"
    )


async def cmd_runs(args: argparse.Namespace) -> int:
    async with operator_service(args) as op:
        rows = await op.runs(args.task_id, limit=args.limit)
    emit(args, rows, lambda: table(rows, RUN_COLUMNS) + f"\n{len(rows)} run(s)")
    return EXIT_OK


async def cmd_notifications(args: argparse.Namespace) -> int:
    async with operator_service(args) as op:
        rows = await op.notifications(conversation=args.conversation, include_displayed=args.all)
    emit(args, rows, lambda: table(rows, NOTIFICATION_COLUMNS) + f"\n{len(rows)} notification(s)")
    return EXIT_OK


async def cmd_action(args: argparse.Namespace) -> int:
    async with operator_service(args) as op:
        result = await op.act(
            args.command,
            args.task_id,
            wait=getattr(args, "wait", True),
            note=getattr(args, "note", None),
        )
    emit(args, result, lambda: str(result.get("message", result)))
    run = result.get("run")
    fine = (None, "succeeded", "skipped", "queued", "running")  # queued: --no-wait
    failed = isinstance(run, dict) and run.get("status") not in fine
    return EXIT_FAILED if failed else EXIT_OK


async def cmd_backfill(args: argparse.Namespace) -> int:
    async with operator_service(args) as op:
        result = await op.backfill(args.task_id, args.start, args.end, args.max_runs)
    emit(args, result, lambda: str(result["message"]))
    return EXIT_OK


async def cmd_db(args: argparse.Namespace) -> int:
    from scheduler_service.cluster.health import schema_revision
    from scheduler_service.cluster.leadership import leadership_for
    from scheduler_service.storage.db import migrate_to_head, schema_advice, shipped_revisions

    settings = settings_for(args, warn=True)
    url = settings.database.sync_url
    if args.db_command == "upgrade":
        # Under the same lock as a starting service, which may be migrating right now.
        leadership = leadership_for(settings.database_url)
        await leadership.open()
        try:
            async with leadership.migrating():
                await asyncio.to_thread(migrate_to_head, url)
        finally:
            await leadership.close()
    current, head = await asyncio.to_thread(schema_revision, url)
    _head, known = shipped_revisions(url)
    data = {
        "database": settings.database.redacted,
        "revision": current,
        "head": head,
        "at_head": current == [head],
        "newer_than_installed": bool(set(current) - known),
    }
    state = (
        "at head" if data["at_head"] else f"head is {head}: {schema_advice(current, head, known)}"
    )
    data["state"] = state
    emit(
        args, data, lambda: f"{data['database']}: revision {', '.join(current) or 'none'} ({state})"
    )
    return EXIT_OK


async def cmd_health(args: argparse.Namespace) -> int:
    from scheduler_service.cluster.health import check_health

    settings = settings_for(args, warn=True)
    report = await asyncio.to_thread(
        check_health, settings.database_url, settings.scheduler.check_interval, args.worker
    )

    def text() -> str:
        lines = [
            f"database   {report.database}: {'reachable' if report.reachable else 'UNREACHABLE'}",
            f"schema     {', '.join(report.revision) or 'none'} (head {report.head})",
            f"leader     {report.leader or '-'} (last heartbeat {report.last_beat or 'never'})",
        ]
        lines += [f"problem    {p}" for p in report.problems]
        lines.append("healthy" if report.ok else "UNHEALTHY")
        return "\n".join(lines)

    emit(args, report.to_dict(), text)
    return EXIT_OK if report.ok else EXIT_FAILED


async def cmd_mcp(args: argparse.Namespace) -> int:
    try:
        from scheduler_service.cli.mcp import serve_stdio
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("mcp"):
            raise
        raise ConfigError(
            "the mcp command needs the MCP SDK: pip install 'task-scheduler[mcp]'"
        ) from None

    settings = settings_for(args)
    configure_logging(settings.scheduler.log_level, settings.scheduler.log_format)
    await serve_stdio(settings, user=args.user, conversation=args.conversation, worker=args.worker)
    return EXIT_OK


async def cmd_check(args: argparse.Namespace) -> int:
    from scheduler_service.cluster.leadership import leadership_for
    from scheduler_service.runs.invariants import check_store
    from scheduler_service.runs.recovery import reconcile, recover_interrupted

    async with operator_service(args) as op:
        service = op.service
        leadership = leadership_for(service.settings.database_url)
        await leadership.open()  # asks other workers' presence locks whether they live
        try:
            report = await check_store(service.db, service.jobs, leadership.is_alive)
            repaired: dict[str, int] = {}
            if args.repair and not report.ok:
                repaired = await reconcile(service.db, service.jobs)
                recovered = await recover_interrupted(
                    service.db,
                    service.settings.scheduler,
                    service.notifier,
                    worker=None,  # runs that never started go back to the queue
                    claimed_here=lambda _run: False,
                    is_alive=leadership.is_alive,
                    queue=True,
                )
                repaired["runs_interrupted"] = recovered.interrupted
                repaired["runs_requeued"] = len(recovered.adopted)
                report = await check_store(service.db, service.jobs, leadership.is_alive)
        finally:
            await leadership.close()
    data = {**report.to_dict(), "repaired": repaired}

    def text() -> str:
        lines = [f"{report.tasks} task(s), {report.jobs} job(s)"]
        lines += [
            f"problem  {p.what}: {p.count} ({', '.join(p.examples)})" for p in report.problems
        ]
        if repaired:
            lines.append(f"repaired {repaired}")
        lines.append("ok" if report.ok else "NOT OK")
        return "\n".join(lines)

    emit(args, data, text)
    return EXIT_OK if report.ok else EXIT_FAILED


WORKER_COLUMNS = [
    ("id", "WORKER"),
    ("leader", "LEADER"),
    ("runs_in_flight", "RUNS"),
    ("tools", "TOOLS"),
    ("started_at", "STARTED"),
    ("beat_age_s", "BEAT AGE S"),
]


async def cmd_workers(args: argparse.Namespace) -> int:
    from scheduler_service.cluster.workers import live_workers
    from scheduler_service.storage.db import Database

    settings = settings_for(args, warn=True)
    db = Database(settings.database_url)
    try:
        await db.check_schema()
        workers = [w.to_dict() for w in await live_workers(db)]
    finally:
        await db.dispose()
    shown = [
        {**w, "leader": "yes" if w["leader"] else "", "tools": ",".join(w["tools"])}
        for w in workers
    ]
    emit(args, workers, lambda: table(shown, WORKER_COLUMNS) + f"\n{len(workers)} worker(s)")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "run": cmd_run,
    "tool": cmd_tool,
    "tasks": cmd_tasks,
    "task": cmd_task,
    "runs": cmd_runs,
    "notifications": cmd_notifications,
    "pause": cmd_action,
    "resume": cmd_action,
    "run-now": cmd_action,
    "cancel": cmd_action,
    "backfill": cmd_backfill,
    "db": cmd_db,
    "health": cmd_health,
    "mcp": cmd_mcp,
    "workers": cmd_workers,
    "check": cmd_check,
}


# -- errors -----------------------------------------------------------------------------------
@contextlib.contextmanager
def one_line_errors(args: argparse.Namespace, code: list[int]) -> Iterator[None]:
    """Turn every expected failure into one stderr line and an exit code."""
    from sqlalchemy.exc import SQLAlchemyError

    from scheduler_service.storage.db import SchemaError
    from scheduler_service.tools import ToolError

    url = getattr(args, "database_url", None)
    try:
        yield
    except (ConfigError, UsageError) as exc:
        _fail(str(exc), code, EXIT_USAGE)
    except SchemaError as exc:
        _fail(f"error: {exc}", code, EXIT_USAGE)
    except ToolError as exc:
        _fail(f"error: {exc}", code, EXIT_FAILED)
    except BrokenPipeError:  # the reader went away (`| head`): nothing left to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code[0] = EXIT_FAILED
    except ModuleNotFoundError as exc:
        if exc.name not in POSTGRES_DRIVERS:
            raise
        _fail(
            "error: PostgreSQL needs the postgres extra: pip install 'task-scheduler[postgres]' "
            f"(missing module {exc.name})",
            code,
            EXIT_USAGE,
        )
    except (SQLAlchemyError, OSError) as exc:
        raw = _database_url(url)
        _fail(
            f"error: database {redact_url(raw)} unavailable: "
            f"{type(exc).__name__}: {first_line(exc, raw)}",
            code,
            EXIT_FAILED,
        )
    except Exception as exc:  # a bug: still one line, still no password
        _fail(
            f"error: unexpected {type(exc).__name__}: {first_line(exc, _database_url(url))} "
            "(a bug in task-scheduler; please report it)",
            code,
            EXIT_FAILED,
        )


def _database_url(url: str | None) -> str:
    try:
        return load_settings(**({"database_url": url} if url else {})).database_url
    except ConfigError:
        return "(unknown)"


def _fail(message: str, code: list[int], exit_code: int) -> None:
    from scheduler_service.storage.urls import redact_urls_in

    print(terminal_text(" ".join(redact_urls_in(message).split("\n"))), file=sys.stderr)
    code[0] = exit_code


def main(argv: list[str] | None = None) -> None:
    # TOOLS entries name the host's modules; an installed console script does not have the
    # working directory on sys.path. Appended, so it can never shadow installed packages.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    args = build_parser().parse_args(argv)  # a bad argument: one line, exit 2
    if args.command is None:
        args.command = "run"
    if args.command != "run" and args.command != "mcp":
        configure_logging("WARNING")
    code = [EXIT_OK]
    with one_line_errors(args, code):
        code[0] = asyncio.run(COMMANDS[args.command](args))
    sys.exit(code[0])
