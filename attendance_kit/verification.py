"""Policy verification (the draft's step 5): the access contract in sql/access_contract.yaml, tried for real.

Every cell of the contract runs as its persona the way Supabase's API would run it (SET LOCAL ROLE +
request.jwt.claims), inside a savepoint that is rolled back, within a transaction that is rolled back too:
nothing is left changed, even when a check fails midway. A private channel's cells run the way Supabase Realtime
checks a join (a probe row of realtime.messages inserted as the owner, then selected back as the persona with
`realtime.topic` set) and a write (the row inserted as the persona). The catalog lints run beside it.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import yaml
from psycopg import sql

from .connection import become, resolve_user
from .errors import KitError, one_line
from .lints import Finding, run_lints
from .migrations import applied_checksums, check_ledger, migration_status, migrations_in
from .paths import SQL_DIR

if TYPE_CHECKING:  # pandas is imported where it is used: the command line starts faster without it
    import pandas as pd

CONTRACT_FILE = SQL_DIR / "access_contract.yaml"
WRITES = ("insert", "update", "delete")
# What a persona may do on a private channel's topic: the realtime.messages row Supabase Realtime checks for it
# (its `extension`) and whether the check is a read (SELECT of a probe row) or a write (INSERT).
CHANNEL_ACTIONS = {
    "receive": ("broadcast", "read"),   # join and receive the topic's broadcasts
    "presence": ("presence", "read"),   # join and see who is present
    "send": ("broadcast", "write"),     # broadcast on the topic
    "track": ("presence", "write"),     # be seen present
}
MATRIX_COLUMNS = ["table", "persona", "operation", "case", "expected", "attempt", "ok"]


@dataclass(frozen=True)
class Check:
    """One cell or named case: `persona` does `operation` on `table`; `expected` as the contract words it."""

    table: str
    persona: str
    operation: str
    case: str
    expected: str
    statement: str
    topic: str = ""  # a private channel's topic (its table is then "topic <name>"); "" for a table's check


@dataclass(frozen=True)
class Attempt:
    """What a check did when it was tried. `outcome` is "allowed" (rows changed), "denied" (refused, or no row
    changed), "visible" (a select that ran) or "error"; `detail` is the database's words. A visible select counts
    the `rows` it saw against the rows the contract expects it to see (`expected_rows`; None when the contract
    says it is denied). Rendered as text only where it is shown (`str`)."""

    outcome: str
    detail: str = ""
    rows: int = 0
    expected_rows: int | None = None
    unexpected: int = 0
    missing: int = 0

    @property
    def label(self) -> str:
        """One word for a table cell: the outcome, or the rows a select saw."""
        return _rows(self.rows) if self.outcome == "visible" else self.outcome

    def __str__(self) -> str:
        if self.outcome == "allowed":  # a channel's check changes no row
            return f"allowed: {_rows(self.rows)}" if self.rows else "allowed"
        if self.outcome != "visible":
            return f"{self.outcome}: {self.detail}" if self.detail else self.outcome
        if self.expected_rows is None:
            return _rows(self.rows)
        if not self.unexpected and not self.missing:
            return f"{_rows(self.rows)} as expected"
        return (f"{_rows(self.rows)}, expected {self.expected_rows}: {self.unexpected} unexpected, "
                f"{self.missing} missing")


@dataclass
class Contract:
    personas: dict[str, str]
    ids: dict[str, str]
    sets: dict[str, str]
    setup: str
    tables: dict[str, dict[str, Any]]
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path = CONTRACT_FILE) -> Contract:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return cls(data["personas"], data["ids"], data.get("sets", {}), data.get("setup", ""), data["tables"],
                   data.get("channels", {}))

    def fill(self, text: str) -> str:
        """The contract's text with each ${name} replaced by its id, or by its set's query."""
        try:
            sets = {name: string.Template(query).substitute(self.ids) for name, query in self.sets.items()}
            return string.Template(text).substitute({**self.ids, **sets})
        except KeyError as error:
            raise KitError(f"the access contract uses ${{{error.args[0]}}} but does not list it under ids") from None

    def checks(self) -> list[Check]:
        checks = []
        for table, rules in self.tables.items():
            for persona in self.personas:
                checks.append(Check(table, persona, "select", "", str(rules["select"][persona]),
                                    f"select id from public.{table}"))
                for operation in WRITES:
                    allowed = persona in rules[operation]["allowed"]
                    checks.append(Check(table, persona, operation, "", "allowed" if allowed else "denied",
                                        rules[operation]["sql"]))
            for case in rules.get("cases", []):
                operation = case["sql"].split()[0].lower()
                checks.append(Check(table, case["as"], operation, case["name"], case["expect"], case["sql"]))
        for name, rules in self.channels.items():
            for persona in self.personas:
                for action in CHANNEL_ACTIONS:
                    allowed = persona in rules[action]
                    checks.append(Check(f"topic {name}", persona, action, "", "allowed" if allowed else "denied",
                                        "", rules["topic"]))
        return checks


@dataclass
class Verification:
    """The executed contract (one row per check) and the catalog lints' findings."""

    matrix: pd.DataFrame
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.matrix["ok"].all()) and not self.findings

    def problems(self) -> list[str]:
        """One line per check that did not go as the contract says, then one per lint finding."""
        lines = []
        for row in self.matrix[~self.matrix["ok"]].itertuples():
            case = f" ({row.case})" if row.case else ""
            lines.append(f"{row.table}: {row.persona} {row.operation}{case}: expected {row.expected}, "
                         f"got {row.attempt}")
        return lines + [str(finding) for finding in self.findings]

    def cells(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The contract's cells (its named cases aside) with a row per table and operation, a column per persona:
        what each attempt did (`Attempt.label`), and whether that is what the contract says."""
        import pandas as pd

        cells = self.matrix[self.matrix["case"] == ""].copy()
        cells["table"] = pd.Categorical(cells["table"], list(dict.fromkeys(cells["table"])))
        cells["persona"] = pd.Categorical(cells["persona"], list(dict.fromkeys(cells["persona"])))
        cells["operation"] = pd.Categorical(cells["operation"], ["select", *WRITES, *CHANNEL_ACTIONS])
        cells["shown"] = [attempt.label for attempt in cells["attempt"]]
        index = ["table", "operation"]
        return (cells.pivot(index=index, columns="persona", values="shown"),
                cells.pivot(index=index, columns="persona", values="ok"))

    def table(self) -> str:
        """The contract's cells as text for a terminal; a cell that is not as the contract says is marked `!`."""
        shown, ok = self.cells()
        return shown.where(ok, shown + " !").to_string()


def verify(conn: psycopg.Connection, contract: Contract | None = None) -> Verification:
    """Run the access contract and the lints; the database is left exactly as it was."""
    check_ledger(applied_checksums(conn), migrations_in())
    pending = [m["migration"] for m in migration_status(conn) if m["status"] == "pending"]
    if pending:
        raise KitError(f"this database lacks {', '.join(pending)}: run {{command}} first",
                       command="migrate --demo-data")
    contract = contract or Contract.load()
    return Verification(run_contract(conn, contract), run_lints(conn) + contract_lints(conn, contract))


def run_contract(conn: psycopg.Connection, contract: Contract) -> pd.DataFrame:
    """Every check of the contract, each as its persona in a rolled-back savepoint."""
    import pandas as pd

    checks = contract.checks()
    users = {who: resolve_user(conn, contract.personas.get(who, who)) for who in {c.persona for c in checks}}
    rows = []
    with conn.transaction(force_rollback=True):
        conn.execute(contract.fill(contract.setup))
        for check in checks:
            role, claims = users[check.persona]
            if check.topic:
                extension, access = CHANNEL_ACTIONS[check.operation]
                attempt = _try_channel(conn, role, claims, contract.fill(check.topic), extension, access)
                ok = attempt.outcome == check.expected
            elif check.operation == "select":
                expected_ids = _expected_rows(conn, check.table, check.expected, contract)
                attempt = _try_select(conn, role, claims, check, expected_ids)
                ok = (attempt.outcome == "denied") if expected_ids is None else (
                    attempt.outcome == "visible" and not attempt.unexpected and not attempt.missing)
            else:
                attempt = _try_write(conn, role, claims, contract.fill(check.statement))
                ok = attempt.outcome == check.expected
            rows.append([check.table, check.persona, check.operation, check.case, check.expected, attempt, ok])
    return pd.DataFrame(rows, columns=MATRIX_COLUMNS)


def _expected_rows(conn: psycopg.Connection, table: str, rule: str, contract: Contract) -> set | None:
    """The ids the rule says are visible (computed as the owner), or None when the rule is `denied`."""
    if rule == "denied":
        return None
    condition = {"all": "true", "none": "false"}.get(rule, rule)
    query = sql.SQL("select id from {} where ").format(sql.Identifier("public", table)) + sql.SQL(
        contract.fill(condition))
    return {row[0] for row in conn.execute(query)}


def _try_select(conn: psycopg.Connection, role: str, claims: dict, check: Check, expected_ids: set | None) -> Attempt:
    try:
        with conn.transaction(force_rollback=True), conn.cursor() as cur:
            become(cur, role, claims)
            seen = {row[0] for row in cur.execute(check.statement)}
    except psycopg.errors.InsufficientPrivilege:
        return Attempt("denied")
    except psycopg.Error as error:
        return Attempt("error", one_line(error))
    if expected_ids is None:
        return Attempt("visible", rows=len(seen))
    return Attempt("visible", rows=len(seen), expected_rows=len(expected_ids), unexpected=len(seen - expected_ids),
                   missing=len(expected_ids - seen))


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _try_write(conn: psycopg.Connection, role: str, claims: dict, statement: str) -> Attempt:
    """Allowed when the statement changed rows; denied when it was refused or changed none."""
    try:
        with conn.transaction(force_rollback=True), conn.cursor() as cur:
            become(cur, role, claims)
            changed = cur.execute(statement).rowcount
    except psycopg.errors.InsufficientPrivilege as error:
        return Attempt("denied", one_line(error))
    except psycopg.Error as error:
        return Attempt("error", one_line(error))
    return Attempt("allowed", rows=changed) if changed > 0 else Attempt("denied", "no row changed")


def _try_channel(conn: psycopg.Connection, role: str, claims: dict, topic: str, extension: str,
                 access: str) -> Attempt:
    """As Supabase Realtime checks a private channel: for a read, a probe row inserted as the owner and selected
    back as the persona; for a write, the row inserted as the persona. Allowed when the row came back or went in;
    denied when it did not, or the insert was refused."""
    try:
        with conn.transaction(force_rollback=True), conn.cursor() as cur:
            probe = None
            if access == "read":
                probe = cur.execute("insert into realtime.messages (topic, extension) values (%s, %s) returning id",
                                    [topic, extension]).fetchone()[0]
            cur.execute("""
                select set_config('role', %(role)s, true), set_config('realtime.topic', %(topic)s, true),
                       set_config('request.jwt.claims', %(claims)s, true),
                       set_config('request.jwt.claim.sub', coalesce(%(claims)s::jsonb ->> 'sub', ''), true),
                       set_config('request.jwt.claim.role', %(role)s, true)
            """, {"role": role, "topic": topic, "claims": json.dumps(claims)})
            if probe is None:
                cur.execute("insert into realtime.messages (topic, extension) values (%s, %s)", [topic, extension])
            elif cur.execute("select id from realtime.messages where id = %s", [probe]).fetchone() is None:
                return Attempt("denied", "probe row not visible")
    except psycopg.errors.InsufficientPrivilege as error:
        return Attempt("denied", one_line(error))
    except psycopg.Error as error:
        return Attempt("error", one_line(error))
    return Attempt("allowed")


def contract_lints(conn: psycopg.Connection, contract: Contract) -> list[Finding]:
    """Lints that need the contract: undeclared tables, and privileges of anon the contract does not give."""
    findings = []
    tables = [row[0] for row in conn.execute(
        "select relname from pg_class where relnamespace = 'public'::regnamespace and relkind in ('r', 'p') "
        "order by relname")]
    for table in tables:
        rules = contract.tables.get(table)
        if rules is None:
            findings.append(Finding("table_not_in_contract", table, "add its rules to sql/access_contract.yaml"))
            continue
        given = {op for op in WRITES if "anon" in rules[op]["allowed"]}
        if rules["select"]["anon"] != "denied":
            given.add("select")
        held = _privileges(conn, "anon", table)
        if held - given:
            findings.append(Finding("anon_privilege_beyond_contract", table,
                                    f"anon holds {', '.join(sorted(held - given))}: revoke it"))
    return findings


def _privileges(conn: psycopg.Connection, role: str, table: str) -> set[str]:
    """Every privilege `role` holds on public.`table`, table-level or on any column."""
    row = conn.execute("""
        select has_any_column_privilege(%(role)s, %(table)s, 'select'),
               has_any_column_privilege(%(role)s, %(table)s, 'insert'),
               has_any_column_privilege(%(role)s, %(table)s, 'update'),
               has_table_privilege(%(role)s, %(table)s, 'delete'),
               has_table_privilege(%(role)s, %(table)s, 'truncate'),
               has_any_column_privilege(%(role)s, %(table)s, 'references'),
               has_table_privilege(%(role)s, %(table)s, 'trigger')
    """, {"role": role, "table": f"public.{table}"}).fetchone()
    names = ("select", *WRITES, "truncate", "references", "trigger")
    return {name for name, held in zip(names, row, strict=True) if held}
