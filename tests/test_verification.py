"""Policy verification: the access contract executed for real, the lints, and what each catches."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg
import pytest

from attendance_kit import Contract, KitError, connect, load_demo_term, verify
from attendance_kit.term import TermSize
from attendance_kit.verification import CHANNEL_ACTIONS

PERSONAS = ["teacher", "other_teacher", "student", "outside_student", "anon", "service_role"]


def content_checksums(conn: psycopg.Connection) -> dict[str, tuple[int, str]]:
    """Row count and checksum of every table outside PostgreSQL's own schemas."""
    tables = [row[0] for row in conn.execute("""
        select c.oid::regclass::text from pg_class c
        where c.relkind = 'r' and c.relnamespace::regnamespace::text not in ('pg_catalog', 'information_schema')
          and c.relnamespace::regnamespace::text not like 'pg_toast%'
        order by 1
    """)]
    return {table: conn.execute(f"select count(*), md5(coalesce(string_agg(t::text, '|' order by t::text), '')) "
                                f"from {table} t").fetchone() for table in tables}


def test_a_freshly_migrated_database_matches_the_contract(conn: psycopg.Connection) -> None:
    result = verify(conn)
    assert result.problems() == []
    assert result.ok
    tables = [r[0] for r in conn.execute(
        "select relname from pg_class where relnamespace = 'public'::regnamespace and relkind = 'r'")]
    channel_cells = result.matrix["table"].str.startswith("topic ")
    generic = result.matrix[(result.matrix["case"] == "") & ~channel_cells]
    assert len(generic) == len(tables) * len(PERSONAS) * 4
    # Four topics (a lecture's and another session's), four actions each.
    assert channel_cells.sum() == 4 * len(PERSONAS) * len(CHANNEL_ACTIONS)
    assert set(generic["persona"]) == set(PERSONAS)
    # Each kind of outcome is exercised, not only refusals.
    outcomes = {attempt.outcome for attempt in result.matrix["attempt"]}
    assert {"allowed", "denied", "visible"} <= outcomes


def test_verification_changes_nothing_even_when_checks_fail(conn: psycopg.Connection) -> None:
    before = content_checksums(conn)
    verify(conn)
    conn.execute("alter table public.attendance_records disable row level security")
    failing = verify(conn)
    assert not failing.ok
    conn.execute("alter table public.attendance_records enable row level security")
    assert content_checksums(conn) == before


# The read policy on realtime.messages replaced by one that lets any signed-in user join any session's topic.
LOOSENED_TOPIC_POLICY = """
    drop policy "Teachers and invited students read their sessions' topics" on realtime.messages;
    create policy "Anyone reads any session topic" on realtime.messages for select to authenticated
    using ((select realtime.topic()) like 'session:%');
"""


@pytest.mark.parametrize(("mutation", "expected_line"), [
    ("""drop policy "Teachers read their sessions' attendance, students their own" on public.attendance_records""",
     "attendance_records: teacher select: expected session_id in (${ada_sessions}), got 0 rows, expected 2: "
     "0 unexpected, 2 missing"),
    ("alter table public.session_analytics disable row level security",
     "rls_disabled_in_public: session_analytics: row level security is off: every API role reaches every row"),
    ("alter table public.session_analytics disable row level security",
     "session_analytics: student select: expected none, got "),
    ("create policy everyone on public.websocket_channels for select to authenticated using (true)",
     "websocket_channels: outside_student select: expected session_id in (${compilers_sessions}), got 2 rows, "
     "expected 1: 1 unexpected, 0 missing"),
    ("grant select on public.courses to anon",
     "anon_privilege_beyond_contract: courses: anon holds select: revoke it"),
    ("grant select on public.courses to anon",
     "courses: anon select: expected denied, got 0 rows"),
    ("alter function private.taught_session_ids() reset search_path",
     "function_search_path_mutable: private.taught_session_ids(): no fixed search_path: "
     "set search_path = '' and qualify names"),
    ("create function public.grant_me() returns void language sql security definer set search_path = '' "
     "as 'select'", "security_definer_function_executable: grant_me(): security definer and executable by "
     "anon and authenticated through the API"),
    ("create policy per_row on public.courses for select to authenticated using (teacher_id = auth.uid())",
     "auth_rls_initplan: courses policy per_row: calls auth.<function>(), private.current_user_id(), "
     "realtime.topic() or current_setting() per row: wrap it as (select ...)"),
    ("create policy per_row_kit on public.courses for select to authenticated "
     "using (teacher_id = private.current_user_id())",
     "auth_rls_initplan: courses policy per_row_kit: calls auth.<function>(), private.current_user_id(), "
     "realtime.topic() or current_setting() per row: wrap it as (select ...)"),
    ("create policy mixed on public.courses for select to authenticated "
     "using ((select auth.uid()) is not null and teacher_id = auth.uid())",
     "auth_rls_initplan: courses policy mixed: "),
    ("grant truncate on public.attendance_records to authenticated",
     "truncate_granted_to_api_role: attendance_records: TRUNCATE granted to authenticated: "),
    ("grant references on public.courses to anon",
     "anon_privilege_beyond_contract: courses: anon holds references: revoke it"),
    ("create policy open_door on public.courses for select using (true)",
     "permissive_policy_to_public: courses policy open_door: permissive and TO public (every role, anon too): "
     "it widens every other policy; name the role"),
    ("create table public.notes (id uuid primary key)",
     "table_not_in_contract: notes: add its rules to sql/access_contract.yaml"),
    (LOOSENED_TOPIC_POLICY, "topic lecture: student receive: expected denied, got allowed"),
    ("create policy per_row_topic on realtime.messages for select to authenticated using (topic = realtime.topic())",
     "auth_rls_initplan: realtime.messages policy per_row_topic: "),
    ("create policy per_row_topic on realtime.messages for select to authenticated using (topic = realtime.topic())",
     "multiple_permissive_policies: realtime.messages for authenticated SELECT: "),
    ("create policy open_topics on realtime.messages for insert with check ((select realtime.topic()) = 'lobby')",
     "permissive_policy_to_public: realtime.messages policy open_topics: "),
    ("""drop policy "Teachers can view session analytics" on public.session_analytics""",
     "published_table_without_select_policy: public.session_analytics: published, so realtime delivers it, "
     "but no SELECT policy decides who receives it"),
])
def test_each_break_is_named(conn: psycopg.Connection, mutation: str, expected_line: str) -> None:
    conn.execute(mutation)
    problems = verify(conn).problems()
    assert any(line.startswith(expected_line) for line in problems), "\n".join(problems)


def test_published_partitions_are_judged_by_their_partitioned_table(conn: psycopg.Connection) -> None:
    """As on Supabase: Realtime publishes realtime.messages without publish_via_partition_root and keeps a partition
    per day, so its partitions, which have no policies of their own, are what pg_publication_tables lists."""
    conn.execute("alter publication supabase_realtime_messages_publication set (publish_via_partition_root = false)")
    conn.execute("create table realtime.messages_2099_01_01 partition of realtime.messages "
                 "for values from ('2099-01-01') to ('2099-01-02')")
    assert not [line for line in verify(conn).problems() if "realtime.messages" in line]
    conn.execute("alter table realtime.messages disable row level security")
    problems = [line for line in verify(conn).problems() if line.startswith("published_table_without")]
    assert problems == ["published_table_without_select_policy: realtime.messages: published, so realtime "
                        "delivers it, but row level security is off"]


def test_the_contract_covers_every_persona_and_operation() -> None:
    contract = Contract.load()
    assert list(contract.personas) == PERSONAS
    for table, rules in contract.tables.items():
        assert set(rules["select"]) == set(PERSONAS), table
        for operation in ("insert", "update", "delete"):
            assert set(rules[operation]["allowed"]) <= set(PERSONAS), (table, operation)


def test_the_command_exits_non_zero_naming_each_mismatch(db_url: str) -> None:
    command = [sys.executable, "-m", "attendance_kit.cli", "verify", "--database-url", db_url]
    clean = subprocess.run(command, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    checks = len(verify_matrix_rows(db_url))
    assert clean.stdout.splitlines()[-1].startswith(f"{checks} checks as the contract says; 0 lint findings")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("alter table public.courses disable row level security")
    broken = subprocess.run(command, capture_output=True, text=True)
    assert broken.returncode == 1
    lines = broken.stdout.strip().splitlines()
    assert "rls_disabled_in_public: courses: row level security is off: every API role reaches every row" in lines
    assert lines[-1].startswith(f"{checks} checks NOT as the contract says; 2 lint findings")


def test_the_command_exits_non_zero_on_a_loosened_topic_policy(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(LOOSENED_TOPIC_POLICY)
    command = [sys.executable, "-m", "attendance_kit.cli", "verify", "--database-url", db_url]
    broken = subprocess.run(command, capture_output=True, text=True)
    assert broken.returncode == 1
    assert "topic lecture: outside_student receive: expected denied, got allowed" in broken.stdout.splitlines()


def verify_matrix_rows(db_url: str) -> list:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return list(verify(conn).matrix.itertuples())


def test_a_database_with_more_than_the_personas_still_matches(conn: psycopg.Connection) -> None:
    load_demo_term(conn, TermSize(weeks=1, group_size=6))
    conn.execute("update public.live_sessions set status = 'live' where id = '5e000000-0000-4000-8000-000000000001'")
    conn.execute("insert into public.attendance_records (session_id, student_id) values "
                 "('5e000000-0000-4000-8000-000000000001', 'b0000000-0000-4000-8000-000000000003')")
    assert verify(conn).problems() == []


def test_an_unmigrated_database_is_named_not_verified(empty_db: str) -> None:
    with connect(empty_db) as conn, pytest.raises(KitError, match="lacks 001_supabase_auth_shim.sql, .*migrate"):
        verify(conn)
    # On the command line the fix names the same database, and --format json still answers on stdout.
    command = [sys.executable, "-m", "attendance_kit.cli", "verify", "--database-url", empty_db, "--format", "json"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "run `./kit migrate --demo-data --database-url 'postgresql://postgres:***@" in line
    answer = json.loads(result.stdout)
    assert answer["ok"] is False and "lacks 001_supabase_auth_shim.sql" in answer["error"]
