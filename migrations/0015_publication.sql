-- Publications a project notifies: the register of what came of each grant.
-- A cohort whose consent requires publication (DUO PUB) adds a duty to notify
-- one by the grant's end; a cohort under a moratorium (MOR) refuses a
-- publication dated before its end.

alter table obligation drop constraint obligation_kind_check;
alter table obligation add constraint obligation_kind_check
    check (kind in ('progress_report', 'results_return', 'publication_notice', 'deletion_attestation'));

create table publication (
    publication_id uuid primary key default gen_random_uuid(),
    project_id     uuid not null references project (project_id),
    title          text not null,
    -- e.g. 10.1038/s41586-020-2649-2
    doi            text,
    url            text,
    venue          text,
    published_on   date not null,
    -- slugs of the cohorts whose data it used
    cohorts        text[] not null,
    notified_by    text not null,
    notified_at    timestamptz not null default now(),
    constraint publication_reference_check check (doi is not null or url is not null)
);
create index publication_project_idx on publication (project_id, notified_at);
create trigger publication_append_only before update or delete on publication
    for each row execute function refuse_change();
