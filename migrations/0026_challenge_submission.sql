-- Scoring an open cohort's challenge (src/opencohort/challenge.rs): teams of
-- registered users submit predictions for a version's test split; the job
-- queue scores them against the hidden labels and keeps only the scores.

alter table open_cohort
    -- submissions per team (or per user outside a team) per UTC day
    add column daily_submissions integer not null default 5
        constraint open_cohort_daily_submissions_check check (daily_submissions between 1 and 100),
    -- no submission after this
    add column closes_at         timestamptz,
    -- `public`: the leaderboard is shown to anyone while the challenge runs;
    -- `after-close`: only once it has closed (organizers see it always)
    add column leaderboard       text not null default 'public'
        constraint open_cohort_leaderboard_check check (leaderboard in ('public', 'after-close')),
    -- the positive class of a two-class task (for AUC and F1)
    add column positive_class    text;

-- A team of registered users in one challenge; a user is in at most one team
-- of a challenge, so its daily limit cannot be multiplied by joining several.
create table challenge_team (
    team_id    uuid primary key default gen_random_uuid(),
    cohort_id  uuid not null references open_cohort (cohort_id),
    name       text not null constraint challenge_team_name_check check (length(name) between 1 and 64),
    created_by text not null,
    created_at timestamptz not null default now(),
    constraint challenge_team_name_key unique (cohort_id, name)
);

-- Members and invitations: a member has `joined_at`; an invitation has none yet.
create table challenge_team_member (
    team_id    uuid not null references challenge_team (team_id),
    cohort_id  uuid not null references open_cohort (cohort_id),
    username   text not null,
    invited_by text not null,
    invited_at timestamptz not null default now(),
    joined_at  timestamptz,
    primary key (team_id, username)
);
create unique index challenge_team_member_one_team on challenge_team_member (cohort_id, username)
    where joined_at is not null;

-- One submission: who sent what for which version, and what scoring made of
-- it. The predictions themselves wait in the object store (`object_key`)
-- only until they are scored; then only the scores remain.
create table challenge_submission (
    submission_id uuid primary key default gen_random_uuid(),
    cohort_id     uuid not null references open_cohort (cohort_id),
    extract_id    uuid not null references extract (extract_id),
    team_id       uuid references challenge_team (team_id),
    submitted_by  text not null,
    description   text,
    format        text not null constraint challenge_submission_format_check check (format in ('labels-csv', 'masks-zip')),
    size_bytes    bigint not null,
    sha256        text not null,
    object_key    text,
    state         text not null default 'queued'
        constraint challenge_submission_state_check check (state in ('queued', 'scored', 'invalid', 'failed')),
    scores        jsonb,
    -- what made it invalid or failed (codes and messages naming open ids only)
    problems      jsonb,
    submitted_at  timestamptz not null default now(),
    scored_at     timestamptz
);
create index challenge_submission_cohort_idx on challenge_submission (cohort_id, submitted_at);
create index challenge_submission_extract_idx on challenge_submission (extract_id, state);
