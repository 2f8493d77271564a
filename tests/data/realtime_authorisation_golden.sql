create function pg_temp."kit_realtime_golden"(_kit_claims text[], _kit_roles text[], _kit_groups int[], _kit_k0 text[], _kit_g0 int[], _kit_s0 int[], _kit_k1 text[], _kit_g1 int[], _kit_s1 int[], _kit_k2 text[], _kit_g2 int[], _kit_s2 int[]) returns table (_kit_subscriber int, _kit_table int, _kit_index int) language plpgsql set plan_cache_mode = force_generic_plan set enable_seqscan = off as $kit_realtime_golden$
#variable_conflict use_column
declare
    _kit_i int;
    _kit_gi int;
    _kit_kt0 uuid[] := _kit_k0;
    _kit_gt0 uuid[] := array(select _kit_kt0[_kit_n] from pg_catalog.unnest(_kit_g0) with ordinality as _kit_g (_kit_n, _kit_o) order by _kit_o);
    _kit_k1_1 integer[] := _kit_k1[:][1:1];
    _kit_k1_2 text[] := _kit_k1[:][2:2];
begin
    -- The tables stay locked (as a SELECT would lock them) so policies cannot change under the check below.
    lock table "public"."attendance_records", "public"."realtime_pairs", "public"."realtime_open" in access share mode;
    if (
select pg_catalog.md5(pg_catalog.concat_ws('|',
    (select pg_catalog.string_agg(row(c.oid, c.relname, n.nspname, n.nspacl, c.relrowsecurity,
         c.relforcerowsecurity, c.relowner, c.relacl)::text, ';' order by c.oid)
     from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
     where c.oid = any ('{16524,16601,16700}'::oid[])),
    (select pg_catalog.string_agg(row(a.attrelid, a.attnum, a.attname, a.atttypid, a.atttypmod, a.attcollation,
         a.attisdropped, a.attacl)::text, ';' order by a.attrelid, a.attnum)
     from pg_catalog.pg_attribute a where a.attrelid = any ('{16524,16601,16700}'::oid[]) and a.attnum > 0),
    (select pg_catalog.string_agg(row(i.indrelid, i.indexrelid, i.indkey)::text, ';' order by i.indexrelid)
     from pg_catalog.pg_index i where i.indrelid = any ('{16524,16601,16700}'::oid[]) and i.indisprimary),
    (select pg_catalog.string_agg(row(p.oid, p.polrelid, p.polname, p.polcmd, p.polpermissive, p.polroles,
         p.polqual)::text, ';' order by p.oid)
     from pg_catalog.pg_policy p where p.polrelid = any ('{16524,16601,16700}'::oid[])),
    (select pg_catalog.string_agg(row(r.rolname, r.rolsuper, r.rolbypassrls, array(
         select m.oid from pg_catalog.pg_roles m where pg_catalog.pg_has_role(r.oid, m.oid, 'USAGE')
         order by m.oid))::text, ';' order by r.rolname)
     from pg_catalog.pg_roles r where r.rolname = any ('{anon,authenticated,service_role}'::text[]) or r.rolname = current_user)
))
)
       is distinct from '0123456789abcdef0123456789abcdef' then
        return query select -1, -1, -1;  -- built for another catalog: rebuild
        return;
    end if;
    perform pg_catalog.set_config('row_security', 'on', true);
    insert into pg_temp."kit_rows_16524_edf3904e" select _kit_x.*, _kit_u._kit_n from pg_catalog.unnest(_kit_kt0) with ordinality as _kit_u (_kit_c1, _kit_n) join "public"."attendance_records" as _kit_x on _kit_x."id" = _kit_u._kit_c1;
    for _kit_i in 1 .. coalesce(pg_catalog.array_length(_kit_claims, 1), 0) loop
        _kit_gi := _kit_groups[_kit_i];
        -- What as_user and Supabase's API do: the JWT's claims, then SET LOCAL ROLE.
        perform pg_catalog.set_config('request.jwt.claims', _kit_claims[_kit_i], true),
                pg_catalog.set_config('role', _kit_roles[_kit_i], true);
        if _kit_roles[_kit_i] = 'anon' then null; end if;
        if _kit_roles[_kit_i] = 'authenticated' then
            return query select _kit_i, 0, "attendance_records"._kit_n from pg_temp."kit_rows_16524_edf3904e" as "attendance_records" where "attendance_records"._kit_n = any (_kit_g0[_kit_s0[_kit_gi] : _kit_s0[_kit_gi + 1] - 1]) and (((((session_id = ANY (ARRAY( SELECT private.taught_session_ids() AS taught_session_ids))) OR (student_id = ( SELECT private.current_user_id() AS current_user_id))))))
                union all select _kit_i, 1, _kit_u._kit_n::int from rows from (pg_catalog.unnest(_kit_k1_1), pg_catalog.unnest(_kit_k1_2)) with ordinality as _kit_u (_kit_c1, _kit_c2, _kit_n) where _kit_u._kit_n = any (_kit_g1[_kit_s1[_kit_gi] : _kit_s1[_kit_gi + 1] - 1]) and exists (select from "public"."realtime_pairs" as _kit_x where _kit_x."a" = _kit_u._kit_c1 and _kit_x."b" = _kit_u._kit_c2);
        end if;
        if _kit_roles[_kit_i] = 'service_role' then
            return query select _kit_i, 0, pg_catalog.array_position(_kit_kt0, _kit_x."id") from "public"."attendance_records" as _kit_x where _kit_x."id" = any (_kit_gt0[_kit_s0[_kit_gi] : _kit_s0[_kit_gi + 1] - 1])
                union all select _kit_i, 1, _kit_u._kit_n::int from rows from (pg_catalog.unnest(_kit_k1_1), pg_catalog.unnest(_kit_k1_2)) with ordinality as _kit_u (_kit_c1, _kit_c2, _kit_n) where _kit_u._kit_n = any (_kit_g1[_kit_s1[_kit_gi] : _kit_s1[_kit_gi + 1] - 1]) and exists (select from "public"."realtime_pairs" as _kit_x where _kit_x."a" = _kit_u._kit_c1 and _kit_x."b" = _kit_u._kit_c2);
        end if;
    end loop;
    perform pg_catalog.set_config('role', 'none', true), pg_catalog.set_config('request.jwt.claims', '', true);
end
$kit_realtime_golden$
