-- Open cohorts for challenges (src/opencohort): a cohort of tier `open` and
-- source `challenge` that an organizer curates from registry subjects whose
-- consent permits open release (or fills by a dedicated upload), splits at
-- subject level and publishes as versioned releases.

create table open_cohort (
    cohort_id      uuid primary key references cohort (cohort_id),
    -- a click-through agreement registered users accept before downloading;
    -- null: anyone downloads without a login
    agreement      text,
    -- the challenge's task: which annotations are its labels, withheld for
    -- the test split (`{"kind": "label", "system": …, "codes": […]}` or a segmentation)
    task           jsonb,
    -- smallest split a publication allows (never below the cohort's suppression threshold)
    min_split_size integer not null default 10 constraint open_cohort_min_split_check check (min_split_size >= 1),
    -- the split specification last applied, and what it gave
    split_spec     jsonb,
    split_report   jsonb,
    split_at       timestamptz,
    created_by     text not null,
    created_at     timestamptz not null default now(),
    updated_at     timestamptz not null default now()
);
select trigger_updated_at('open_cohort');

-- Each subject's split, as last applied. A subject is in exactly one split:
-- the primary key is the first line of the leakage check.
create table open_cohort_split (
    cohort_id  uuid not null references open_cohort (cohort_id),
    subject_id uuid not null references subject (subject_id),
    split      text not null constraint open_cohort_split_check check (split in ('train', 'validation', 'test')),
    primary key (cohort_id, subject_id)
);
create index open_cohort_split_subject_idx on open_cohort_split (subject_id);
