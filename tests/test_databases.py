"""The databases the kit makes for itself: a lesson's own database, made afresh from a template every time; scratch
databases that are gone afterwards, however the block ends."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest
from psycopg import sql

from attendance_kit import KitError, connect, scratch_database, start_lesson
from attendance_kit.connection import url_with_database
from attendance_kit.databases import TEMPLATE_PREFIX, Contents
from attendance_kit.migrations import applied_checksums

LESSON = f"lesson_test_{os.getpid()}"  # workers may share a server (--database-url)


def databases(url: str, prefix: str) -> list[str]:
    with connect(url) as conn:
        return [row[0] for row in conn.execute(
            "select datname from pg_database where starts_with(datname, %s) order by 1", [prefix])]


def test_a_lesson_is_made_afresh_whatever_was_done_in_it(empty_db: str) -> None:
    lesson = start_lesson(LESSON, through="002_base_schema.sql", demo_data=True, server_url=empty_db)
    assert lesson.url == url_with_database(empty_db, LESSON)
    assert str(lesson).startswith(f"{LESSON}: this notebook's own database, made afresh (sql/ through "
                                  "002_base_schema.sql and the demo data)")
    assert "***" in str(lesson) and lesson.url.split("@")[0].split(":")[-1] not in str(lesson)  # no password
    with lesson.connect() as conn:
        assert sorted(applied_checksums(conn)) == ["001_supabase_auth_shim.sql", "002_base_schema.sql"]
        conn.execute("create table public.my_notes (note text)")
        conn.execute("delete from public.live_sessions")
        held = lesson.connect()  # a connection still open when the notebook runs again
    again = start_lesson(LESSON, through="002_base_schema.sql", demo_data=True, server_url=empty_db)
    with again.connect() as conn:
        assert conn.execute("select to_regclass('public.my_notes')").fetchone()[0] is None
        assert conn.execute("select count(*) from public.live_sessions").fetchone()[0] == 2
    assert _is_dead(held)
    with connect(empty_db) as conn:  # the main database is untouched
        assert conn.execute("select to_regclass('public.live_sessions')").fetchone()[0] is None


def _is_dead(conn: psycopg.Connection) -> bool:
    try:
        conn.execute("select 1")
    except psycopg.OperationalError:
        return True
    return False


def test_an_empty_lesson_and_one_with_everything(empty_db: str) -> None:
    empty = start_lesson(LESSON, server_url=empty_db)
    with empty.connect() as conn:
        assert applied_checksums(conn) == {}
        assert conn.execute("select count(*) from pg_tables where schemaname = 'public'").fetchone()[0] == 0
    full = start_lesson(LESSON, through="all", demo_data=True, server_url=empty_db)
    assert "sql/ migrated and the demo data" in str(full)
    with full.connect() as conn:
        assert conn.execute("select to_regclass('public.session_analytics')").fetchone()[0] is not None


def test_a_template_is_built_once_and_reused(empty_db: str) -> None:
    template = Contents("003_tables_and_indexes.sql", demo_data=True).template_name()
    start_lesson(LESSON, through="003_tables_and_indexes.sql", demo_data=True, server_url=empty_db)
    with connect(empty_db) as conn:
        first = conn.execute("select oid from pg_database where datname = %s", [template]).fetchone()
    start_lesson(LESSON, through="003_tables_and_indexes.sql", demo_data=True, server_url=empty_db)
    with connect(empty_db) as conn:
        assert conn.execute("select oid from pg_database where datname = %s", [template]).fetchone() == first
        # Copies of one template only: none half-built, one per kind.
        assert not [name for name in databases(empty_db, TEMPLATE_PREFIX) if name.endswith("_building")]


def test_an_unknown_step_is_one_line(empty_db: str) -> None:
    with pytest.raises(KitError, match="no migration named 099_nothing.sql: the files are 001_"):
        start_lesson(LESSON, through="099_nothing.sql", server_url=empty_db)


def test_a_database_of_the_users_with_a_lesson_s_name_is_never_dropped(empty_db: str) -> None:
    theirs = f"{LESSON}_theirs"
    with connect(empty_db) as conn:
        conn.execute(sql.SQL("drop database if exists {}").format(sql.Identifier(theirs)))
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(theirs)))
    with connect(url_with_database(empty_db, theirs)) as conn:
        conn.execute("create table precious (note text); insert into precious values ('keep me')")
    with pytest.raises(KitError, match=f"database {theirs} exists on this server but was not made by attendance-kit"):
        start_lesson(theirs, server_url=empty_db)
    with connect(url_with_database(empty_db, theirs)) as conn:
        assert conn.execute("select note from precious").fetchall() == [("keep me",)]
    start_lesson(LESSON, server_url=empty_db)  # the kit's own lesson, made twice: dropped and made again
    start_lesson(LESSON, server_url=empty_db)


def test_a_scratch_database_is_dropped_even_when_the_block_is_interrupted(empty_db: str) -> None:
    with pytest.raises(KeyboardInterrupt), scratch_database(empty_db, "all", demo_data=True) as scratch:
        name = scratch.rsplit("/", 1)[1]
        with psycopg.connect(scratch) as conn:  # left open, as an interrupted cell leaves it
            assert conn.execute("select count(*) from auth.users").fetchone()[0] == 7
            raise KeyboardInterrupt
    assert name not in databases(empty_db, "kit_scratch_")


def test_a_role_that_may_not_create_databases_gets_one_line(empty_db: str) -> None:
    role, password = f"kit_no_createdb_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with connect(empty_db) as conn:
        conn.execute(sql.SQL("create role {} login password {}").format(sql.Identifier(role), sql.Literal(password)))
    try:
        params = psycopg.conninfo.conninfo_to_dict(empty_db)
        url = f"postgresql://{role}:{password}@{params['host']}:{params['port']}/{params['dbname']}"
        with pytest.raises(KitError, match=f"cannot make database {LESSON} afresh: .*need a .*role that may create"):
            start_lesson(LESSON, server_url=url)
    finally:
        with connect(empty_db) as conn:
            conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))
