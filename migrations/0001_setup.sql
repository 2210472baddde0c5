-- Helpers shared by later migrations.

-- Keeps `updated_at` current on every real change of a row.
create or replace function set_updated_at() returns trigger as $$
begin
    new.updated_at = now();
    return new;
end;
$$ language plpgsql;

-- `select trigger_updated_at('<table>')` installs the trigger above on a table.
create or replace function trigger_updated_at(tablename regclass) returns void as $$
begin
    execute format(
        'create trigger set_updated_at before update on %s
         for each row when (old is distinct from new) execute function set_updated_at()',
        tablename);
end;
$$ language plpgsql;
