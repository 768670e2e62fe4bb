"""The operator CLI under random arguments, hostile stored text and mangled database URLs.

Whatever it is given, every invocation ends with exit code 0, 1 or 2, and what it writes
holds no traceback, no "unexpected" error (the CLI's last-resort line for a bug), no
control character that could steer a terminal, and no database password. The stored
data is hostile too: task names, run errors and notification texts carrying escape
sequences, a forged table row and bidi overrides. Seeded, so a failure reproduces; a few
seconds per backend.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import pytest
from sqlalchemy.engine import make_url

from scheduler_service.cli import commands as cli
from scheduler_service.logs.escape import is_control
from tests.conftest import database_execute

SECRET = "s3cr3t-pw"
SEEDS = range(3)
ROUNDS = 25
HOSTILE = [
    "\x1b]0;owned\x07",
    "\x1b[2J\x1b[H",
    "ok\r\nu9  Fake task  scheduled",
    "\x9b31mred",
    "\u202eevil\u202c",
    "line\u2028break",
    "tab\there\x7f",
]
WORDS = ["", " ", "u1", "c1", "x" * 300, "task_missing", "é", "--", "-1", *HOSTILE]
NUMBERS = ["-1", "0", "1", "20", "1000", "1001", str(10**20), "nan", "inf", "1e309", "0x10", "٣"]
REMINDER = {
    "frequency": "daily",
    "scheduled_time": "09:00",
    "tool_name": "reminder_tool",
    "operation": "add_reminder",
    "parameters": {"title": "t", "date": "today"},
}


@pytest.fixture(autouse=True)
def _keep_pytest_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "configure_logging", lambda *a, **k: None)


def with_password(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return url
    return parsed.set(password=SECRET).render_as_string(hide_password=False)


def mangled_urls(url: str) -> list[str]:
    """The test's URL with a password, broken in the ways a hand-edited URL breaks."""
    good = with_password(url)
    base = f"postgresql://op:{SECRET}@127.0.0.1"
    return [
        good,
        f"{base}:5432x/prod",
        f"{base}:99999/prod",
        f"{base}:5432/prod?sslmode=require&foo=bar",
        f"{base}:5432/prod?sslmode=sometimes",
        f"{base}:5432/prod?sslrootcert=/no/such/ca.pem",
        f"postgres://op:{SECRET}@[::1:5432/prod",
        f"mysql://op:{SECRET}@127.0.0.1/prod",
        f"op:{SECRET}@127.0.0.1/prod",
        f"{url}?timeout=5" if url.startswith("sqlite") else f"{good}?ssl=maybe",
    ]


def seed_hostile_rows(url: str, run: Callable[..., tuple[int, str, str]]) -> list[str]:
    """Tasks, a run and notifications whose texts are hostile; their task ids."""
    db = ("--database-url", url)
    run("db", "upgrade", *db)
    ids = []
    for index, name in enumerate(HOSTILE):
        code, out, err = run(
            "tool", "create_task", json.dumps({**REMINDER, "name": name}),
            "--user", f"u{index % 2}", "--conversation", "c1", "--json", *db,
        )  # fmt: skip
        assert code == 0, err
        ids.append(json.loads(out)["task"]["task_id"])
    text = "".join(HOSTILE).replace("'", "''")
    database_execute(
        url,
        "INSERT INTO task_scheduler_notifications (id, task_id, user_id, conversation_id, "
        "task_name, status, priority, title, message, created_at) VALUES ('n1', "
        f"'{ids[0]}', 'u0', 'c1', '{text[:200]}', 'failed', 1, '{text[:300]}', '{text}', "
        "CURRENT_TIMESTAMP)",
    )
    database_execute(
        url,
        "INSERT INTO task_scheduler_runs (id, task_id, user_id, kind, fire_time, attempt, "
        f"status, queued_at, error) VALUES ('r1', '{ids[0]}', 'u0', 'manual', "
        f"CURRENT_TIMESTAMP, 1, 'failed', CURRENT_TIMESTAMP, '{text}')",
    )
    return ids


def random_argv(rng: random.Random, task_ids: list[str], urls: list[str]) -> list[str]:
    def word() -> str:
        return rng.choice(WORDS + task_ids)

    def number() -> str:
        return rng.choice(NUMBERS)

    commands: list[Callable[[], list[str]]] = [
        lambda: ["tasks", *rng.choice([[], ["--user", word()]]),
                 *rng.choice([[], ["--status", rng.choice(["scheduled", "paused", word()])]])],
        lambda: ["task", word()],
        lambda: ["runs", word(), *rng.choice([[], ["--limit", number()]])],
        lambda: ["notifications", *rng.choice([[], ["--conversation", word()], ["--all"]])],
        lambda: [rng.choice(["pause", "resume", "cancel"]), word()],
        lambda: ["tool", rng.choice(["get_tasks", "get_task", "preview_schedule", word()]),
                 rng.choice(["{}", json.dumps({"task_id": word()}), word()]), "--user", word()],
        lambda: ["db", "current"],
        lambda: ["health", *rng.choice([[], ["--worker", word()]])],
        lambda: ["workers"],
        lambda: ["run", "--metrics-port", number(), "--run-for", rng.choice(["nan", "-1", "1e309"])],
        lambda: ["mcp", "--user", rng.choice(["", " ", "x" * 201, HOSTILE[0]]),
                 "--conversation", word()],
        lambda: [word(), word()],
    ]  # fmt: skip
    argv = rng.choice(commands)()
    if argv[0] not in ("run", "mcp") or rng.random() < 0.5:
        argv += ["--database-url", rng.choice(urls)]
    if rng.random() < 0.3:
        argv.append("--json")
    return argv


def check(argv: list[str], code: int, out: str, err: str) -> None:
    shown = out + err
    where = f"argv={argv!r}\nstdout={out!r}\nstderr={err!r}"
    assert code in (0, 1, 2), where
    assert "Traceback" not in shown and "a bug in task-scheduler" not in shown, where
    assert not [c for c in shown if c != "\n" and is_control(c)], where
    assert SECRET not in shown, where


@pytest.mark.parametrize("seed", SEEDS)
def test_cli_fuzz(capsys: pytest.CaptureFixture[str], database_url: str, seed: int) -> None:
    def run(*argv: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as done:
            cli.main(list(argv))
        out, err = capsys.readouterr()
        return int(done.value.code or 0), out, err

    task_ids = seed_hostile_rows(database_url, run)
    urls = [database_url, *mangled_urls(database_url)]
    rng = random.Random(seed)
    results: dict[int, int] = {}
    for _ in range(ROUNDS):
        argv = random_argv(rng, task_ids, urls)
        code, out, err = run(*argv)
        check(argv, code, out, err)
        results[code] = results.get(code, 0) + 1
    # Every listing of the hostile rows, as table and as JSON.
    db = ("--database-url", with_password(database_url))
    for argv in (
        ["tasks"],
        ["notifications", "--all"],
        ["runs", task_ids[0]],
        ["task", task_ids[0]],
    ):
        for extra in ([], ["--json"]):
            code, out, err = run(*argv, *extra, *db)
            check([*argv, *extra], code, out, err)
            assert code == 0, (argv, err)
            assert "\\x1b" in out or "\\u001b" in out, (argv, out)
    assert set(results) <= {0, 1, 2}


def test_mangled_urls_never_show_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    """Every command that takes a URL, with every mangled URL (no database involved)."""
    commands: list[list[str]] = [["tasks"], ["health"], ["db", "upgrade"], ["db", "current"],
                                 ["workers"], ["task", "t"], ["run", "--run-for", "0"]]  # fmt: skip
    for url in mangled_urls("postgresql+asyncpg://op@127.0.0.1:1/nothing")[1:]:
        for command in commands:
            argv = [*command, "--database-url", url]
            with pytest.raises(SystemExit) as done:
                cli.main(argv)
            out, err = capsys.readouterr()
            check(argv, int(done.value.code or 0), out, err)
            assert done.value.code == 2 and len(err.strip().splitlines()) == 1, (argv, err)
