"""Policy verification (the seed's step 5): the access contract in sql/access_contract.yaml, tried for real.

Every cell of the contract runs as its persona the way Supabase's API would run it (SET LOCAL ROLE +
request.jwt.claims), inside a savepoint that is rolled back, within a transaction that is rolled back too:
nothing is left changed, even when a check fails midway. The catalog lints run beside it.
"""

from __future__ import annotations

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
from .migrations import SQL_DIR, migration_status

if TYPE_CHECKING:  # pandas is imported where it is used: the command line starts faster without it
    import pandas as pd

CONTRACT_FILE = SQL_DIR / "access_contract.yaml"
WRITES = ("insert", "update", "delete")
MATRIX_COLUMNS = ["table", "persona", "operation", "case", "expected", "actual", "ok"]


@dataclass(frozen=True)
class Check:
    """One cell or named case: `persona` does `operation` on `table`; `expected` as the contract words it."""

    table: str
    persona: str
    operation: str
    case: str
    expected: str
    statement: str


@dataclass
class Contract:
    personas: dict[str, str]
    ids: dict[str, str]
    sets: dict[str, str]
    setup: str
    tables: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, path: Path = CONTRACT_FILE) -> Contract:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return cls(data["personas"], data["ids"], data.get("sets", {}), data.get("setup", ""), data["tables"])

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
        return checks


@dataclass
class Verification:
    """The executed contract (one row per check) and the catalog lints' findings."""

    matrix: pd.DataFrame
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.matrix["ok"].all()) and not self.findings

    def to_html(self) -> str:
        """The contract's cells as a colour-coded table: a row per table and operation, a column per persona.

        Green: allowed (or rows visible), grey: denied, red: not what the contract says.
        """
        import pandas as pd

        cells = self.matrix[self.matrix["case"] == ""].copy()
        order = {"index": list(dict.fromkeys(cells["table"])), "columns": list(dict.fromkeys(cells["persona"]))}
        cells["table"] = pd.Categorical(cells["table"], order["index"])
        cells["persona"] = pd.Categorical(cells["persona"], order["columns"])
        cells["operation"] = pd.Categorical(cells["operation"], ["select", *WRITES])
        cells["shown"] = cells["actual"].str.replace(r"^(allowed|denied|error).*", r"\1", regex=True).str.replace(
            " as expected", "")
        shown = cells.pivot(index=["table", "operation"], columns="persona", values="shown")
        ok = cells.pivot(index=["table", "operation"], columns="persona", values="ok")

        def colour(column: pd.Series) -> list[str]:
            return ["background-color: #f4b6b6" if not ok.loc[index, column.name]
                    else "background-color: #e6e6e6; color: #666" if value == "denied"
                    else "background-color: #c8ebc8" for index, value in column.items()]

        return shown.style.apply(colour).set_uuid("access-matrix").to_html()

    def problems(self) -> list[str]:
        """One line per check that did not go as the contract says, then one per lint finding."""
        lines = []
        for row in self.matrix[~self.matrix["ok"]].itertuples():
            case = f" ({row.case})" if row.case else ""
            lines.append(f"{row.table}: {row.persona} {row.operation}{case}: expected {row.expected}, "
                         f"got {row.actual}")
        return lines + [str(finding) for finding in self.findings]


def verify(conn: psycopg.Connection, contract: Contract | None = None) -> Verification:
    """Run the access contract and the lints; the database is left exactly as it was."""
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
            if check.operation == "select":
                expected_ids = _expected_rows(conn, check.table, check.expected, contract)
                actual, ok = _try_select(conn, role, claims, check, expected_ids)
            else:
                actual = _try_write(conn, role, claims, contract.fill(check.statement))
                ok = actual.split(":")[0] == check.expected
            rows.append([check.table, check.persona, check.operation, check.case, check.expected, actual, ok])
    return pd.DataFrame(rows, columns=MATRIX_COLUMNS)


def _expected_rows(conn: psycopg.Connection, table: str, rule: str, contract: Contract) -> set | None:
    """The ids the rule says are visible (computed as the owner), or None when the rule is `denied`."""
    if rule == "denied":
        return None
    condition = {"all": "true", "none": "false"}.get(rule, rule)
    query = sql.SQL("select id from {} where ").format(sql.Identifier("public", table)) + sql.SQL(
        contract.fill(condition))
    return {row[0] for row in conn.execute(query)}


def _try_select(conn: psycopg.Connection, role: str, claims: dict, check: Check,
                expected_ids: set | None) -> tuple[str, bool]:
    try:
        with conn.transaction(force_rollback=True), conn.cursor() as cur:
            become(cur, role, claims)
            seen = {row[0] for row in cur.execute(check.statement)}
    except psycopg.errors.InsufficientPrivilege:
        return "denied", expected_ids is None
    except psycopg.Error as error:
        return f"error: {one_line(error)}", False
    if expected_ids is None:
        return _rows(len(seen)), False
    if seen == expected_ids:
        return f"{_rows(len(seen))} as expected", True
    return (f"{_rows(len(seen))}, expected {len(expected_ids)}: {len(seen - expected_ids)} unexpected, "
            f"{len(expected_ids - seen)} missing"), False


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _try_write(conn: psycopg.Connection, role: str, claims: dict, statement: str) -> str:
    """'allowed …' when the statement changed rows; 'denied …' when it was refused or changed none."""
    try:
        with conn.transaction(force_rollback=True), conn.cursor() as cur:
            become(cur, role, claims)
            changed = cur.execute(statement).rowcount
    except psycopg.errors.InsufficientPrivilege as error:
        return f"denied: {one_line(error)}"
    except psycopg.Error as error:
        return f"error: {one_line(error)}"
    return f"allowed: {_rows(changed)}" if changed > 0 else "denied: no row changed"


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
