-- Releases (extracts): what an approved project receives, built by a job from
-- its grant's scope (src/release/build.rs) and served by src/http/extracts.rs.

create table extract (
    extract_id     uuid primary key default gen_random_uuid(),
    project_id     uuid not null references project (project_id),
    -- the grant whose scope the release holds (any version: the grant's id)
    grant_id       uuid not null,
    -- 1, 2, … per project
    version        integer not null,
    state          text not null default 'queued' constraint extract_state_check
        check (state in ('queued', 'building', 'ready', 'failed', 'superseded')),
    -- whether the release holds imaging (a download then needs the grant's imaging)
    imaging        boolean not null default false,
    -- progress: files written of those planned (null until planned)
    files_done     integer not null default 0,
    files_planned  integer,
    created_by     text not null,
    created_at     timestamptz not null default now(),
    started_at     timestamptz,
    ready_at       timestamptz,
    superseded_at  timestamptz,
    supersedes     uuid references extract (extract_id),
    -- why a build failed, in words that name no subject or identifier
    error          text,
    -- SHA-256 (hex) of manifest.json, once ready
    manifest_sha256 text,
    total_files    bigint,
    total_bytes    bigint,
    total_subjects integer,
    constraint extract_version_key unique (project_id, version),
    constraint extract_ready_check check (state <> 'ready' or (manifest_sha256 is not null and ready_at is not null))
);
create index extract_project_idx on extract (project_id, version desc);

-- Every file of a release, recorded once written to the object store.
create table extract_file (
    extract_id  uuid not null references extract (extract_id),
    -- relative to extracts/{project}/{extract}/
    path        text not null,
    size        bigint not null,
    sha256      text not null,
    media_type  text not null,
    object_key  text not null,
    primary key (extract_id, path)
);

-- The subjects a release holds: a withdrawal notifies exactly the projects
-- that received the subject.
create table extract_subject (
    extract_id uuid not null references extract (extract_id),
    subject_id uuid not null references subject (subject_id),
    primary key (extract_id, subject_id)
);
create index extract_subject_subject_idx on extract_subject (subject_id);

-- Bytes served, aggregated per file, user, download session and day: one row
-- updated per request (range) rather than one audit event per range. The audit
-- log gets one `extract.download` event when a row is made and one
-- `extract.downloaded` when its bytes first reach the file's size.
create table extract_download (
    extract_id   uuid not null references extract (extract_id),
    path         text not null,
    username     text not null,
    -- the client's `X-Download-Session` header, or `-` without one
    session      text not null,
    day          date not null,
    requests     integer not null default 0,
    bytes_served bigint not null default 0,
    first_at     timestamptz not null default now(),
    last_at      timestamptz not null default now(),
    completed_at timestamptz,
    primary key (extract_id, path, username, session, day)
);
