-- What a grant freezes and what access costs per scope.
--
-- Cohort snapshots: at approval a grant freezes, per cohort of its scope, the
-- set of subjects it covers: those who joined the cohort up to the snapshot's
-- instant and had not withdrawn by then. The instant is exact: membership
-- rows take the wall-clock time of their insert, and the snapshot is taken
-- under a lock that waits for every writer in flight, so a subject is in the
-- snapshot if and only if it joined before. Its size and a digest of the
-- registry pseudonyms are recorded to verify it later. Renewals keep it.

alter table cohort_subject alter column added_at set default clock_timestamp();

create table grant_snapshot (
    grant_id  uuid not null,
    cohort_id uuid not null references cohort (cohort_id),
    as_of     timestamptz not null,
    subjects  integer not null,
    -- SHA-256 (hex) of the sorted registry pseudonyms, one per line
    digest    text not null,
    primary key (grant_id, cohort_id)
);
create trigger grant_snapshot_append_only before update or delete on grant_snapshot
    for each row execute function refuse_change();

-- Fees per scope: imaging adds its own surcharge to the tier's fees.
alter table fee_schedule
    add column imaging_access_fee bigint not null default 0
        constraint fee_schedule_imaging_access_fee_check check (imaging_access_fee >= 0),
    add column imaging_maintenance_fee bigint not null default 0
        constraint fee_schedule_imaging_maintenance_fee_check check (imaging_maintenance_fee >= 0);
-- What a fee is made of: [{"item": "controlled access", "amount": 50000}, ...]
alter table fee add column basis jsonb not null default '[]';

-- The data use agreement: versioned text, append-only. The newest version is
-- the one a PI accepts; the acceptance records its version and digest.
create table dua_version (
    version      text primary key constraint dua_version_version_check check (version ~ '^[A-Za-z0-9._-]{1,64}$'),
    title        text not null,
    body         text not null,
    -- SHA-256 (hex) of the body
    sha256       text not null,
    published_by text not null,
    published_at timestamptz not null default clock_timestamp()
);
create trigger dua_version_append_only before update or delete on dua_version
    for each row execute function refuse_change();
alter table application add column dua_sha256 text;

insert into dua_version (version, title, body, sha256, published_by)
select v, t, b, encode(sha256(convert_to(b, 'UTF8')), 'hex'), 'system'
from (values ('custodian-dua-2026-1', 'Data use agreement', $dua$
By accepting this agreement on behalf of the project, the principal investigator
(PI) agrees, for the project and every member of it, that:

1. Purpose. The data are used only for the research described in the approved
   application, within its scope and conditions, and for no other purpose.
2. No re-identification. No one attempts to identify, or to contact, any person
   whose data are released, nor links the data with other data in a way that
   could identify them.
3. Pseudonyms. The data carry pseudonyms that belong to this project only. They
   are not shared with, or matched against, another project's data.
4. Security. The data are held only where the application's data security
   statement says, with access restricted to the project's accepted members.
5. No onward sharing. The data, or any copy or derivative that could reveal an
   individual's data, are not passed to anyone outside the project.
6. Withdrawals. When a participant withdraws, the project deletes their data
   within 30 days of the notice and the PI acknowledges the notice.
7. Duties. The project files its progress reports, returns derived results
   where the cohort's terms require it, and notifies the registry of
   publications, by their due dates. Overdue duties may hold the grant.
8. Publication. Results are published only in aggregate, without small cells
   that could single out a participant, and respect any publication
   moratorium of the cohort.
9. Incidents. Any breach, loss or suspected misuse is reported to the data
   stewards without delay, and within 72 hours at the latest.
10. End of access. When the grant ends, is revoked or the project closes, the
    project deletes the data and the PI attests the deletion.
11. Audit. The registry records every access; the stewards may suspend or
    revoke the grant at once if this agreement is breached.
$dua$)) as seed (v, t, b);

-- Grants made before snapshots existed freeze their cohorts as of their approval.
insert into grant_snapshot (grant_id, cohort_id, as_of, subjects, digest)
select g.grant_id, c.cohort_id, g.created_at, count(s.subject_id),
       encode(sha256(convert_to(coalesce(string_agg(s.pseudonym, E'\n' order by s.pseudonym collate "C"), ''), 'UTF8')), 'hex')
from access_grant g
cross join lateral jsonb_array_elements_text(g.scope -> 'cohorts') as wanted (slug)
join cohort c on c.slug = wanted.slug
left join cohort_subject cs on cs.cohort_id = c.cohort_id and cs.added_at <= g.created_at
left join subject s on s.subject_id = cs.subject_id and (s.withdrawn_at is null or s.withdrawn_at > g.created_at)
where g.version = 1
group by g.grant_id, c.cohort_id, g.created_at;
