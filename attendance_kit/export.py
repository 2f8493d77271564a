"""`attendance-kit export supabase DIR`: the kit as a Supabase CLI project, for `supabase db push` and
`supabase test db`.

- `supabase/migrations/<timestamp>_<name>.sql`: each file of sql/, verbatim. The timestamps are fixed (a base date
  plus the file's number, in seconds), so exporting again writes nothing new and `db push` sees nothing to do.
- `supabase/seed.sql`: the demo data, which `supabase db reset` loads.
- `supabase/tests/database/access_contract.test.sql`: pgTAP generated from sql/access_contract.yaml: the same
  cells `attendance-kit verify` tries, each an assertion with a message, run as its persona the way Supabase's API
  runs a request (its claims in `request.jwt.claims`, `SET LOCAL ROLE`), each attempt rolled back; a private
  channel's cells as Supabase Realtime checks a join (a probe row of realtime.messages selected back as the
  persona) and a write (the row inserted as the persona).
- `supabase/config.toml`, only where the project has none: the CLI needs one (`supabase start`, `link`, `test db`)
  and fills in its defaults; a project's own is never touched.

A file whose text is already there is left untouched.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from .demo import DEMO_DATA_FILE
from .errors import KitError
from .migrations import migrations_in
from .verification import CHANNEL_ACTIONS, Check, Contract

# Migration N is stamped BASE + N seconds: stable, ordered, and after any timestamp of 2025 a project may hold.
BASE = datetime(2026, 1, 1, tzinfo=UTC)
TEST_FILE = Path("supabase/tests/database/access_contract.test.sql")
CONFIG_FILE = Path("supabase/config.toml")
CONFIG = 'project_id = "attendance-kit"  # written by attendance-kit export; the Supabase CLI fills in the rest\n'

# Helpers the tests define in pg_temp: a persona's role and Supabase-shaped claims, and an attempt as that persona
# inside a block whose exception rolls it back (the attempt's effect and its role switch alike).
PGTAP_HELPERS = """
create function pg_temp.role_of(who text) returns text language sql as $$
    select case when who in ('anon', 'service_role') then who else 'authenticated' end
$$;

create function pg_temp.claims_of(who text) returns text language sql as $$
    select case when who in ('anon', 'service_role')
        then json_build_object('role', who, 'iss', 'supabase', 'is_anonymous', who = 'anon')::text
        else (select json_build_object(
                  'sub', u.id, 'role', 'authenticated', 'aud', 'authenticated', 'email', u.email,
                  'iss', 'supabase', 'aal', 'aal1', 'is_anonymous', false,
                  'app_metadata', json_build_object('provider', 'email', 'providers', json_build_array('email')),
                  'user_metadata', json_build_object())::text
              from auth.users u where u.email = who)
    end
$$;

-- 'allowed' when the statement changed rows as `who`, 'denied' when it was refused or changed none, else the error.
create function pg_temp.attempt(who text, statement text) returns text language plpgsql as $$
declare
    changed bigint;
begin
    begin
        perform set_config('request.jwt.claims', pg_temp.claims_of(who), true);
        execute format('set local role %I', pg_temp.role_of(who));
        execute statement;
        get diagnostics changed = row_count;
        raise exception using errcode = 'P0001', message = changed::text;
    exception
        when sqlstate 'P0001' then
            return case when sqlerrm::bigint > 0 then 'allowed' else 'denied' end;
        when insufficient_privilege then
            return 'denied';
        when others then
            return 'error: ' || sqlerrm;
    end;
end;
$$;

-- The ids `query` returns as `who`, sorted, as text ('{}' for none); 'denied' when `who` may not run it at all;
-- else the error, so an unexpected one fails its assertion rather than the file.
create function pg_temp.visible(who text, query text) returns text language plpgsql as $$
declare
    ids uuid[];
begin
    begin
        perform set_config('request.jwt.claims', pg_temp.claims_of(who), true);
        execute format('set local role %I', pg_temp.role_of(who));
        execute format('select coalesce(array_agg(id order by id), ''{}'') from (%s) q', query) into ids;
        raise exception using errcode = 'P0001', message = ids::text;
    exception
        when sqlstate 'P0001' then
            return sqlerrm;
        when insufficient_privilege then
            return 'denied';
        when others then
            return 'error: ' || sqlerrm;
    end;
end;
$$;

-- As Supabase Realtime checks a private channel, as `who`: 'allowed' when the probe row inserted as the owner
-- comes back (a read) or the row goes in (a write), 'denied' when not, else the error.
create function pg_temp.channel_access(who text, channel_topic text, channel_extension text, access text)
returns text language plpgsql as $$
declare
    -- Read as the owner: the persona may not read auth.users.
    role_name text := pg_temp.role_of(who);
    claims text := pg_temp.claims_of(who);
    probe uuid;
    allowed boolean := true;
begin
    begin
        if access = 'read' then
            insert into realtime.messages (topic, extension) values (channel_topic, channel_extension)
            returning id into probe;
        end if;
        perform set_config('realtime.topic', channel_topic, true), set_config('request.jwt.claims', claims, true),
                set_config('request.jwt.claim.sub', coalesce(claims::jsonb ->> 'sub', ''), true),
                set_config('request.jwt.claim.role', role_name, true), set_config('role', role_name, true);
        if access = 'read' then
            allowed := exists (select 1 from realtime.messages m where m.id = probe);
        else
            insert into realtime.messages (topic, extension) values (channel_topic, channel_extension);
        end if;
        raise exception using errcode = 'P0001', message = case when allowed then 'allowed' else 'denied' end;
    exception
        when sqlstate 'P0001' then
            return sqlerrm;
        when insufficient_privilege then
            return 'denied';
        when others then
            return 'error: ' || sqlerrm;
    end;
end;
$$;
"""


def export_supabase(directory: Path) -> list[Path]:
    """Write the Supabase CLI project under `directory` (made if missing); return the files written (none when all
    were current)."""
    directory = Path(directory)
    files = {Path("supabase/migrations") / f"{timestamp(m.name)}_{m.name[4:]}": m.sql for m in migrations_in()}
    files[Path("supabase/seed.sql")] = DEMO_DATA_FILE.read_text(encoding="utf-8")
    files[TEST_FILE] = access_contract_pgtap(Contract.load())
    if not (directory / CONFIG_FILE).exists():
        files[CONFIG_FILE] = CONFIG
    try:
        return _write(directory, files)
    except OSError as error:
        raise KitError(f"cannot write the Supabase project in {directory}: {_why_not(directory, error)}: give a "
                       "directory you may write to (it is made if missing)") from None


def _write(directory: Path, files: dict[Path, str]) -> list[Path]:
    written = []
    for relative, text in files.items():
        path = directory / relative
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _why_not(directory: Path, error: OSError) -> str:
    """The file in the way of the directory, else the system's reason and the path it concerns."""
    in_the_way = next((path for path in (directory, *directory.parents) if path.exists()), None)
    if in_the_way is not None and not in_the_way.is_dir():
        return f"{in_the_way} is a file, not a directory"
    return f"{error.filename}: {error.strerror}"


def timestamp(migration: str) -> str:
    """The Supabase CLI's 14-digit version for sql/NNN_name.sql."""
    return (BASE + timedelta(seconds=int(migration[:3]))).strftime("%Y%m%d%H%M%S")


def access_contract_pgtap(contract: Contract) -> str:
    """The contract as a pgTAP test file: setup, then one assertion per cell, in one transaction rolled back."""
    checks = contract.checks()
    lines = [
        "-- Generated by `attendance-kit export supabase` from sql/access_contract.yaml: do not edit; export again.",
        "-- The access contract, each cell as its persona (request.jwt.claims + SET LOCAL ROLE, as Supabase's API",
        "-- runs a request), each attempt rolled back: the same cells `attendance-kit verify` tries.",
        "begin;",
        "create schema if not exists extensions;",
        "create extension if not exists pgtap with schema extensions;",
        "set local search_path = public, extensions;",
        PGTAP_HELPERS,
        "-- The contract's setup, as the owner.",
        contract.fill(contract.setup).rstrip(),
        "",
        f"select plan({len(checks)});",
        "",
    ]
    for check in checks:
        lines.append(_assertion(contract, check))
    lines += ["", "select * from finish();", "rollback;", ""]
    return "\n".join(lines)


def _assertion(contract: Contract, check: Check) -> str:
    who = contract.personas.get(check.persona, check.persona)
    case = f" ({check.case})" if check.case else ""
    message = _literal(f"{check.table}: {check.persona} {check.operation}{case} is {check.expected}")
    if check.topic:
        extension, access = CHANNEL_ACTIONS[check.operation]
        return (f"select is(pg_temp.channel_access({_literal(who)}, {_literal(contract.fill(check.topic))}, "
                f"{_literal(extension)}, {_literal(access)}), {_literal(check.expected)}, {message});")
    if check.operation != "select":
        return (f"select is(pg_temp.attempt({_literal(who)}, $check${contract.fill(check.statement)}$check$), "
                f"{_literal(check.expected)}, {message});")
    if check.expected == "denied":
        return f"select is(pg_temp.visible({_literal(who)}, {_literal(check.statement)}), 'denied', {message});"
    condition = {"all": "true", "none": "false"}.get(check.expected, check.expected)
    expected = (f"(select coalesce(array_agg(id order by id), '{{}}')::text from public.{check.table} "
                f"where {contract.fill(condition)})")
    return f"select is(pg_temp.visible({_literal(who)}, {_literal(check.statement)}), {expected}, {message});"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
