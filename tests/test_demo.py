"""The demo world: the personas' constants in attendance_kit.demo are exactly what sql/seed.sql loads."""

from __future__ import annotations

import psycopg

from attendance_kit import demo


def test_the_constants_are_the_demo_data_s(conn: psycopg.Connection) -> None:
    people = conn.execute("""
        select u.id::text, u.email, p.full_name from auth.users u join public.profiles p on p.id = u.id order by u.id
    """).fetchall()
    assert people == sorted(demo.PERSONAS)
    lectures = dict(conn.execute("select title, id::text from public.live_sessions").fetchall())
    assert lectures == {"Analytical Engines: lecture 1": demo.ENGINES_LECTURE,
                        "Compilers: lecture 1": demo.COMPILERS_LECTURE}
    courses = dict(conn.execute("select title, id::text from public.courses").fetchall())
    assert courses == {"Analytical Engines": demo.ENGINES_COURSE, "Compilers": demo.COMPILERS_COURSE}
    groups = dict(conn.execute("select name, id::text from public.student_groups").fetchall())
    assert groups == {"Engines A": demo.ENGINES_GROUP, "Compilers B": demo.COMPILERS_GROUP}
    members = conn.execute("select id::text, group_id::text from public.student_profiles order by id").fetchall()
    assert members == sorted([(p.id, demo.ENGINES_GROUP) for p in (demo.SAM, demo.TESS, demo.UMA)]
                             + [(p.id, demo.COMPILERS_GROUP) for p in (demo.OLIVE, demo.PAT)])
