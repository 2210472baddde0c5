-- Publishing open cohorts: a published version is a release (`extract`) that
-- belongs to the open cohort instead of a project, built by the same job from
-- the cohort's frozen split, in the cohort's own pseudonyms.

-- What a version publishes, besides the split: the scope as a grant would name it.
alter table open_cohort
    add column fields           text[] not null default '{}',
    add column modalities       text[] not null default '{}',
    add column annotation_kinds text[] not null default '{}',
    add column imaging          boolean not null default true,
    -- after this, a version may include the test split's labels
    add column reveal_at        timestamptz;

-- The open cohort's own pseudonymization key (sealed with the registry key,
-- bound to the cohort): open IDs link neither to the registry's nor to any project's.
create table open_cohort_key (
    cohort_id uuid primary key references open_cohort (cohort_id),
    sealed    bytea not null
);

alter table extract
    alter column project_id drop not null,
    alter column grant_id drop not null,
    add column open_cohort_id uuid references open_cohort (cohort_id),
    -- a version of an open cohort whose test labels are included (after the reveal)
    add column labels_revealed boolean not null default false,
    add constraint extract_owner_check check ((project_id is null) <> (open_cohort_id is null)),
    add constraint extract_grant_check check ((project_id is null) = (grant_id is null));
create unique index extract_open_version_key on extract (open_cohort_id, version) where open_cohort_id is not null;

-- The split each subject of a published version is in (null in a project's release).
alter table extract_subject
    add column split text constraint extract_subject_split_check check (split in ('train', 'validation', 'test'));

-- Registered users who accepted an open cohort's click-through agreement, in
-- the wording they accepted (its SHA-256): a changed agreement is accepted anew.
create table open_cohort_acceptance (
    cohort_id        uuid not null references open_cohort (cohort_id),
    username         text not null,
    agreement_sha256 text not null,
    accepted_at      timestamptz not null default now(),
    primary key (cohort_id, username, agreement_sha256)
);
