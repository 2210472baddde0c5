-- The imaging catalog: de-identified subjects, studies, series and instances,
-- and the upload sessions that bring them in. No column holds an original
-- identifier: UIDs are registry UIDs, dates are shifted, subjects are pseudonyms.

create table subject (
    subject_id      uuid primary key default gen_random_uuid(),
    -- keyed HMAC of (site, local patient ID); see src/deid/pseudonym.rs
    pseudonym       text not null constraint subject_pseudonym_key unique,
    site_id         uuid not null references site (site_id),
    sex             text,
    birth_year      integer,
    -- the subject's keyed date offset, kept so tables (labs, diagnoses) shift alike
    date_shift_days integer not null,
    withdrawn_at    timestamptz,
    created_at      timestamptz not null default now()
);

create table cohort_subject (
    cohort_id  uuid not null references cohort (cohort_id),
    subject_id uuid not null references subject (subject_id),
    added_at   timestamptz not null default now(),
    primary key (cohort_id, subject_id)
);
create index cohort_subject_subject_idx on cohort_subject (subject_id);

-- The station-independent identity of a scanner: the site-effect axis.
create table scanner (
    scanner_id     uuid primary key default gen_random_uuid(),
    manufacturer   text not null default '',
    model          text not null default '',
    field_strength double precision,
    constraint scanner_identity_key unique nulls not distinct (manufacturer, model, field_strength)
);

create table upload_session (
    upload_session_id uuid primary key default gen_random_uuid(),
    cohort_id         uuid not null references cohort (cohort_id),
    site_id           uuid not null references site (site_id),
    created_by        text not null,
    state             text not null default 'open'
        constraint upload_session_state_check check (state in ('open', 'committed', 'aborted')),
    -- files received so far; each file's ordinal is drawn from it
    file_count        integer not null default 0,
    created_at        timestamptz not null default now(),
    closed_at         timestamptz
);

create table study (
    study_id          uuid primary key default gen_random_uuid(),
    study_uid         text not null constraint study_study_uid_key unique,
    subject_id        uuid not null references subject (subject_id),
    cohort_id         uuid not null references cohort (cohort_id),
    site_id           uuid not null references site (site_id),
    study_date        date,
    description       text,
    age_years         double precision,
    height_m          double precision,
    weight_kg         double precision,
    created_at        timestamptz not null default now()
);
create index study_subject_idx on study (subject_id);
create index study_cohort_idx on study (cohort_id);

create table series (
    series_id         uuid primary key default gen_random_uuid(),
    series_uid        text not null constraint series_series_uid_key unique,
    study_id          uuid not null references study (study_id),
    scanner_id        uuid references scanner (scanner_id),
    modality          text,
    body_part         text,
    series_date       date,
    series_number     integer,
    description       text,
    slice_thickness   double precision,
    pixel_spacing_row double precision,
    pixel_spacing_col double precision,
    created_at        timestamptz not null default now()
);
create index series_study_idx on series (study_id);

create table instance (
    instance_id       uuid primary key default gen_random_uuid(),
    sop_uid           text not null constraint instance_sop_uid_key unique,
    series_id         uuid not null references series (series_id),
    upload_session_id uuid references upload_session (upload_session_id),
    sop_class_uid     text not null,
    transfer_syntax   text not null,
    instance_number   integer,
    rows              integer,
    columns           integer,
    frames            integer,
    object_key        text not null constraint instance_object_key_key unique,
    size_bytes        bigint not null,
    sha256            bytea not null,
    -- staged: in an open session; published: visible; quarantined: held for a steward
    status            text not null
        constraint instance_status_check check (status in ('staged', 'published', 'quarantined')),
    quarantine_code   text,
    quarantine_reason text,
    -- registry SOP UIDs this instance references (SEG, RTSTRUCT, derived images)
    referenced_sop_uids text[] not null default '{}',
    created_at        timestamptz not null default now(),
    published_at      timestamptz
);
create index instance_series_idx on instance (series_id);
create index instance_session_idx on instance (upload_session_id);
create index instance_status_idx on instance (status) where status <> 'published';

-- The per-file report of a session. No client file name is kept: names often carry PHI.
create table upload_file (
    upload_file_id    uuid primary key default gen_random_uuid(),
    upload_session_id uuid not null references upload_session (upload_session_id),
    -- position of the file in the session, from 1
    ordinal           integer not null,
    outcome           text not null
        constraint upload_file_outcome_check check (outcome in ('stored', 'duplicate', 'rejected', 'quarantined')),
    code              text,
    message           text,
    sop_uid           text,
    size_bytes        bigint not null,
    created_at        timestamptz not null default now(),
    constraint upload_file_ordinal_key unique (upload_session_id, ordinal)
);
