-- What discovery reads changes in these tables. Each writing transaction that
-- touches one leaves a row here (one per transaction, no lock shared with
-- other writers); the number of committed rows, plus those already folded into
-- `discovery_change_pruned`, is the version an in-memory discovery index
-- compares with its own before it answers.

create table discovery_change (
    xid xid8 primary key
);

create table discovery_change_pruned (
    singleton boolean primary key default true constraint discovery_change_pruned_singleton check (singleton),
    pruned    bigint not null
);
insert into discovery_change_pruned (pruned) values (0);

create function note_discovery_change() returns trigger language plpgsql as $$
begin
    insert into discovery_change (xid) values (pg_current_xact_id()) on conflict do nothing;
    return null;
end
$$;

do $$
declare
    t text;
begin
    foreach t in array array['site', 'cohort', 'subject', 'cohort_subject', 'discovery_series', 'observation',
                             'diagnosis', 'variant', 'genotype', 'annotation'] loop
        execute format('create trigger %I after insert or update or delete or truncate on %I
                        for each statement execute function note_discovery_change()', t || '_discovery_change', t);
    end loop;
end
$$;
