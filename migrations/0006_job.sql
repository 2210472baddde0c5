-- Background work: a queue in PostgreSQL, claimed with FOR UPDATE SKIP LOCKED
-- and held under a lease, so any number of nodes can run workers and a job
-- whose worker died is picked up again when its lease runs out.

create table job (
    job_id       bigint generated always as identity primary key,
    kind         text not null,
    payload      jsonb not null default '{}',
    state        text not null default 'queued'
        constraint job_state_check check (state in ('queued', 'running', 'done', 'failed')),
    -- Recurring and singleton jobs: at most one queued or running job per key.
    dedupe_key   text,
    run_at       timestamptz not null default now(),
    attempts     integer not null default 0,
    max_attempts integer not null default 5 constraint job_max_attempts_check check (max_attempts > 0),
    locked_by    text,
    lease_until  timestamptz,
    last_error   text,
    created_at   timestamptz not null default now(),
    finished_at  timestamptz
);

create index job_due_idx on job (run_at) where state in ('queued', 'running');
create unique index job_dedupe_key_idx on job (dedupe_key) where state in ('queued', 'running');
