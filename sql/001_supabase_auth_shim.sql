-- Supabase auth shim: on plain PostgreSQL, create the pieces of Supabase the schema relies on.
-- On a Supabase database every one of them exists already, and this file leaves them untouched:
-- each object is created only when it is missing (no CREATE OR REPLACE over Supabase's own).

-- Roles of Supabase's API: anon (no JWT), authenticated (a signed-in user), service_role (bypasses RLS).
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'anon') then
        create role anon nologin noinherit;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then
        create role authenticated nologin noinherit;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'service_role') then
        create role service_role nologin noinherit bypassrls;
    end if;
end
$$;

create schema if not exists auth;

-- A minimal auth.users: just the columns the kit reads. Supabase's own table has many more. Only where missing:
-- on a Supabase project `postgres` may not create in schema auth, and CREATE TABLE IF NOT EXISTS checks that right
-- before it looks whether the table exists.
do $$
begin
    if to_regclass('auth.users') is null then
        create table auth.users (
            id uuid primary key,
            email text unique,
            raw_app_meta_data jsonb not null default '{}',
            raw_user_meta_data jsonb not null default '{}',
            created_at timestamptz not null default now()
        );
    end if;
end
$$;

-- auth.uid(), auth.role(), auth.jwt() as Supabase defines them: claims come from the request.jwt.claims
-- setting (or the older per-claim settings). After a transaction that set it locally ends, the setting
-- reads as '' rather than NULL, hence nullif(..., '').
do $$
begin
    if to_regprocedure('auth.uid()') is null then
        create function auth.uid() returns uuid
        language sql stable
        as $fn$
            select coalesce(
                nullif(current_setting('request.jwt.claim.sub', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
            )::uuid
        $fn$;
    end if;
    if to_regprocedure('auth.role()') is null then
        create function auth.role() returns text
        language sql stable
        as $fn$
            select coalesce(
                nullif(current_setting('request.jwt.claim.role', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
            )::text
        $fn$;
    end if;
    if to_regprocedure('auth.jwt()') is null then
        create function auth.jwt() returns jsonb
        language sql stable
        as $fn$
            select coalesce(
                nullif(current_setting('request.jwt.claim', true), ''),
                nullif(current_setting('request.jwt.claims', true), '')
            )::jsonb
        $fn$;
    end if;
end
$$;

-- Supabase's realtime publication, empty, as Supabase creates it: Supabase Realtime delivers postgres_changes only
-- for the tables in it (the dashboard's "Enable Realtime" adds them; so does step 4, sql/006).
do $$
begin
    if not exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
        create publication supabase_realtime;
    end if;
end
$$;

-- The grants Supabase gives: the API roles use the public and auth schemas; tables, functions and
-- sequences created in public are granted to them by default, and RLS decides which rows they reach.
-- (The kit's own migrations then revoke what a table's access rules do not need.)
grant usage on schema public to anon, authenticated, service_role;
grant usage on schema auth to anon, authenticated, service_role;
grant execute on function auth.uid(), auth.role(), auth.jwt() to anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
