"""Catalog lints: Supabase's database-linter rules that matter for this schema, computed from the catalogs.

Each lint is one query returning (object, detail) rows for what it finds; a clean database returns none.
The rules follow Supabase's linter (splinter) in meaning; the schemas checked are the ones the API exposes
(`public`), and for function settings and security-definer functions every project schema. The policy rules check
realtime.messages too: its policies decide who joins, receives, sends and tracks on private channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

# Schemas whose functions must pin their search_path (the auth shim's functions mirror Supabase's own).
FUNCTION_SCHEMAS = ("public", "private")
# Calls that depend only on the request, and so belong in an initplan: (select auth.uid()), not auth.uid().
# private.current_user_id() is the kit's auth.uid() for policies (sql/002).
# realtime.topic() is the topic a Realtime check is about, the same for every row.
REQUEST_CALL = r"(auth\.(uid|jwt|role|email)\(\)|private\.current_user_id\(\)|realtime\.topic\(\)|current_setting\()"
# Schemas that belong to PostgreSQL or to Supabase itself, not to the project.
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast", "auth", "extensions", "graphql",
                  "graphql_public", "realtime", "storage", "vault", "pgsodium", "supabase_functions",
                  "supabase_migrations", "net", "cron", "pgbouncer")


@dataclass(frozen=True)
class Lint:
    name: str
    query: str


@dataclass(frozen=True)
class Finding:
    lint: str
    object: str
    detail: str

    def __str__(self) -> str:
        return f"{self.lint}: {self.object}: {self.detail}"


LINTS = [
    Lint("rls_disabled_in_public", """
        select c.oid::regclass::text, 'row level security is off: every API role reaches every row'
        from pg_class c
        where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p') and not c.relrowsecurity
    """),
    Lint("policy_exists_rls_disabled", """
        select distinct c.oid::regclass::text, 'has policies but row level security is off, so they do nothing'
        from pg_policy p join pg_class c on c.oid = p.polrelid
        where (c.relnamespace = 'public'::regnamespace or c.oid = to_regclass('realtime.messages'))
          and not c.relrowsecurity
    """),
    Lint("function_search_path_mutable", """
        select p.oid::regprocedure::text, 'no fixed search_path: set search_path = '''' and qualify names'
        from pg_proc p
        where p.pronamespace::regnamespace::text = any (%(function_schemas)s)
          and not exists (select 1 from unnest(coalesce(p.proconfig, '{}')) s where s like 'search_path=%%')
    """),
    Lint("auth_rls_initplan", """
        select format('%%s policy %%s', c.oid::regclass, p.polname),
               'calls auth.<function>(), private.current_user_id(), realtime.topic() or current_setting() '
               'per row: '
               'wrap it as (select ...)'
        from pg_policy p join pg_class c on c.oid = p.polrelid
        cross join lateral (values (pg_get_expr(p.polqual, p.polrelid)),
                                   (pg_get_expr(p.polwithcheck, p.polrelid))) e (expression)
        where (c.relnamespace = 'public'::regnamespace or c.oid = to_regclass('realtime.messages'))
          and c.relrowsecurity
          -- a call left once the wrapped ones, (select auth.uid()), are taken out
          and regexp_replace(lower(e.expression), 'select\\s+' || %(request_call)s, '', 'g') ~ %(request_call)s
        group by c.oid, p.polname
    """),
    Lint("unindexed_foreign_keys", """
        select format('%%s (%%s)', c.conrelid::regclass, c.conname), 'no index starts with the key''s columns'
        from pg_constraint c
        where c.contype = 'f' and c.connamespace = 'public'::regnamespace
          and not exists (
              select 1 from pg_index i
              where i.indrelid = c.conrelid
                and (i.indkey::int2[])[0:cardinality(c.conkey) - 1] operator(pg_catalog.@>) c.conkey)
    """),
    Lint("security_definer_function_executable", """
        select p.oid::regprocedure::text,
               'security definer and executable by ' || string_agg(r.role, ' and ') || ' through the API'
        from pg_proc p
        cross join (values ('anon'), ('authenticated')) r (role)
        where p.pronamespace = 'public'::regnamespace and p.prosecdef
          and has_function_privilege(r.role, p.oid, 'execute')
        group by p.oid
    """),
    Lint("security_definer_executable_by_anon", """
        select p.oid::regprocedure::text, 'security definer and executable by anon: revoke it'
        from pg_proc p
        where p.prosecdef and has_function_privilege('anon', p.oid, 'execute')
          and p.pronamespace::regnamespace::text <> all (%(system_schemas)s)
          and p.pronamespace <> 'public'::regnamespace  -- reported above, with the API roles
    """),
    # A published partition (publish_via_partition_root off, as Supabase Realtime's realtime.messages) is read
    # through its partitioned table's policies: the root is judged.
    Lint("published_table_without_select_policy", """
        select distinct format('%%s.%%I', c.relnamespace::regnamespace, c.relname),
               'published, so realtime delivers it, but ' || case when not c.relrowsecurity
                   then 'row level security is off' else 'no SELECT policy decides who receives it' end
        from pg_publication_tables t
        cross join lateral (select format('%%I.%%I', t.schemaname, t.tablename)::regclass as published) r
        join pg_class c on c.oid = coalesce(pg_partition_root(r.published), r.published)
        where not c.relrowsecurity or not exists (
            select 1 from pg_policy p where p.polrelid = c.oid and p.polcmd in ('r', '*'))
    """),
    Lint("truncate_granted_to_api_role", """
        select c.oid::regclass::text, 'TRUNCATE granted to ' || string_agg(r.role, ' and ')
                                      || ': it empties the table past every policy; revoke it'
        from pg_class c cross join (values ('anon'), ('authenticated')) r (role)
        where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')
          and has_table_privilege(r.role, c.oid, 'truncate')
        group by c.oid
    """),
    Lint("multiple_permissive_policies", """
        select format('%%s for %%s %%s', c.oid::regclass, r.rolname, a.action),
               'permissive policies ' || string_agg(quote_ident(p.polname), ', ' order by p.polname)
               || ' each run for every row: merge them into one'
        from pg_policy p
        join pg_class c on c.oid = p.polrelid
        cross join (values ('r', 'SELECT'), ('a', 'INSERT'), ('w', 'UPDATE'), ('d', 'DELETE')) a (cmd, action)
        -- the roles Supabase's advisor checks; authenticator and dashboard_user exist on Supabase only
        join pg_roles r on r.rolname in ('anon', 'authenticated', 'authenticator', 'dashboard_user')
        where (c.relnamespace = 'public'::regnamespace or c.oid = to_regclass('realtime.messages'))
          and p.polpermissive and p.polcmd in (a.cmd, '*')
          and (0::oid = any (p.polroles)
               or exists (select 1 from unnest(p.polroles) role where pg_has_role(r.oid, role, 'member')))
        group by c.oid, r.rolname, a.action
        having count(*) > 1
    """),
    Lint("permissive_policy_to_public", """
        select format('%%s policy %%s', c.oid::regclass, p.polname),
               'permissive and TO public (every role, anon too): it widens every other policy; name the role'
        from pg_policy p join pg_class c on c.oid = p.polrelid
        where (c.relnamespace = 'public'::regnamespace or c.oid = to_regclass('realtime.messages'))
          and p.polpermissive and 0::oid = any (p.polroles)
    """),
]


def run_lints(conn: psycopg.Connection) -> list[Finding]:
    """Every finding of every lint, in lint order."""
    params = {"function_schemas": list(FUNCTION_SCHEMAS), "request_call": REQUEST_CALL,
              "system_schemas": list(SYSTEM_SCHEMAS)}
    return [
        Finding(lint.name, obj, detail)
        for lint in LINTS
        for obj, detail in conn.execute(lint.query, params).fetchall()
    ]
