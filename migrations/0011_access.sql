-- Access governance: researcher profiles, projects and their members,
-- versioned applications, committee review (assignments, declarations of
-- interest, votes, threaded comments with edit history) and versioned grants.
-- Every change is also an audit event written in the same transaction.

-- Consent terms of a cohort as GA4GH DUO codes (see src/access/consent.rs),
-- and whether applications whose stated use matches them exactly are approved by rule.
alter table cohort add column consent_terms jsonb;
alter table cohort add column auto_approve boolean not null default false;

create table researcher_profile (
    username    text primary key,
    name        text not null,
    institution text not null,
    email       text not null,
    orcid       text constraint researcher_profile_orcid_format
        check (orcid ~ '^[0-9]{4}-[0-9]{4}-[0-9]{4}-[0-9]{3}[0-9X]$'),
    position    text not null,
    -- bona fides checked by a steward; cleared when the profile changes
    verified_at timestamptz,
    verified_by text,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now()
);
select trigger_updated_at('researcher_profile');

create table project (
    project_id  uuid primary key default gen_random_uuid(),
    title       text not null,
    pi_username text not null,
    created_at  timestamptz not null default now(),
    -- closed after the PI attests that the project's data is deleted
    closed_at   timestamptz,
    deletion_attestation text
);

create table project_member (
    project_id  uuid not null references project (project_id),
    username    text not null,
    role        text not null constraint project_member_role_check check (role in ('pi', 'collaborator')),
    invited_by  text not null,
    invited_at  timestamptz not null default now(),
    accepted_at timestamptz,
    removed_at  timestamptz,
    removed_by  text,
    primary key (project_id, username)
);
create index project_member_user_idx on project_member (username);
create unique index project_member_one_pi on project_member (project_id) where role = 'pi';

-- The project's own pseudonymization key, created at its first approval,
-- sealed under the registry key; destroyed (the row deleted) when the project closes.
create table project_key (
    project_id uuid primary key references project (project_id),
    sealed     bytea not null,
    created_at timestamptz not null default now()
);

create table application (
    application_id  uuid primary key default gen_random_uuid(),
    project_id      uuid not null references project (project_id),
    state           text not null default 'draft' constraint application_state_check
        check (state in ('draft', 'submitted', 'under_review', 'changes_requested', 'approved', 'active',
                         'rejected', 'withdrawn')),
    -- the working copy the applicant edits; each submission keeps it whole as a version
    draft           jsonb not null,
    -- the latest submitted version (0: never submitted)
    version         integer not null default 0,
    created_by      text not null,
    created_at      timestamptz not null default now(),
    submitted_at    timestamptz,
    -- the service level: when a decision is due
    due_on          date,
    decided_at      timestamptz,
    -- approved by the cohort's auto-eligibility rule rather than by votes
    decided_by_rule boolean not null default false,
    -- data use agreement accepted by the PI: its exact text version
    dua_version     text,
    dua_accepted_at timestamptz,
    updated_at      timestamptz not null default now()
);
select trigger_updated_at('application');
create index application_project_idx on application (project_id);
create index application_state_idx on application (state);

create table application_version (
    application_id uuid not null references application (application_id),
    version        integer not null,
    content        jsonb not null,
    created_by     text not null,
    created_at     timestamptz not null default now(),
    primary key (application_id, version)
);

-- Every state change, with its actor and reason.
create table application_transition (
    transition_id  bigint generated always as identity primary key,
    application_id uuid not null references application (application_id),
    from_state     text not null,
    to_state       text not null,
    actor          text not null,
    reason         text,
    at             timestamptz not null default now()
);
create index application_transition_app_idx on application_transition (application_id, transition_id);

create table review_assignment (
    application_id uuid not null references application (application_id),
    steward        text not null,
    assigned_by    text not null,
    assigned_at    timestamptz not null default now(),
    recused_at     timestamptz,
    recusal_reason text,
    primary key (application_id, steward)
);

create table interest_declaration (
    declaration_id bigint generated always as identity primary key,
    application_id uuid not null references application (application_id),
    steward        text not null,
    -- whether the steward has a competing interest (then they recuse)
    conflict       boolean not null,
    statement      text not null,
    at             timestamptz not null default now()
);

create table review_vote (
    application_id uuid not null references application (application_id),
    version        integer not null,
    steward        text not null,
    vote           text not null constraint review_vote_vote_check
        check (vote in ('approve', 'approve_with_conditions', 'request_changes', 'reject')),
    conditions     jsonb,
    comment        text,
    at             timestamptz not null default now(),
    primary key (application_id, version, steward)
);

create table review_comment (
    comment_id     uuid primary key default gen_random_uuid(),
    application_id uuid not null references application (application_id),
    parent_id      uuid references review_comment (comment_id),
    author         text not null,
    -- visible to the applicants, or to stewards only
    internal       boolean not null default false,
    created_at     timestamptz not null default now()
);
create index review_comment_app_idx on review_comment (application_id, created_at);

-- Comment text is append-only: an edit adds a revision.
create table review_comment_revision (
    comment_id uuid not null references review_comment (comment_id),
    revision   integer not null,
    body       text not null,
    at         timestamptz not null default now(),
    primary key (comment_id, revision)
);

-- Grants: append-only versions. A renewal, a suspension, a reinstatement,
-- a revocation or a closure adds a version; the latest is in force.
create table access_grant (
    grant_id       uuid not null,
    version        integer not null,
    project_id     uuid not null references project (project_id),
    application_id uuid not null references application (application_id),
    state          text not null constraint access_grant_state_check
        check (state in ('pending', 'active', 'suspended', 'revoked', 'closed')),
    -- cohorts (slugs), fields, modalities, annotation kinds, imaging
    scope          jsonb not null,
    -- structured and free-text conditions
    conditions     jsonb not null,
    not_before     timestamptz not null,
    not_after      timestamptz not null,
    reason         text,
    created_by     text not null,
    created_at     timestamptz not null default now(),
    primary key (grant_id, version),
    constraint access_grant_window_check check (not_before < not_after)
);
create index access_grant_project_idx on access_grant (project_id, grant_id, version desc);

create function refuse_change() returns trigger language plpgsql as $$
begin
    raise exception '% is append-only', tg_table_name;
end
$$;
create trigger access_grant_append_only before update or delete on access_grant
    for each row execute function refuse_change();
create trigger application_version_append_only before update or delete on application_version
    for each row execute function refuse_change();
create trigger review_comment_revision_append_only before update or delete on review_comment_revision
    for each row execute function refuse_change();
create trigger application_transition_append_only before update or delete on application_transition
    for each row execute function refuse_change();
