-- Protected counts by the cell key method (see src/discovery/protect.rs).

-- Each subject's fixed, secret, random record key: a cell's key is the sum of
-- its subjects' keys, and its perturbation is read from the published table at
-- that key. Never shown, never logged.
alter table subject add column record_key bigint not null
    default ('x' || substr(md5(gen_random_uuid()::text), 1, 16))::bit(64)::bigint;

-- Thresholds are bounded: below 5 a count protects too little; above 50 the
-- guard against differencing could no longer recognise a near set, and one
-- cohort could hide everyone else's subjects. Each cohort's threshold now
-- applies to its own subjects only, and counts are perturbed instead of rounded.
update cohort set suppression_threshold = least(greatest(suppression_threshold, 5), 50);
alter table cohort drop constraint cohort_suppression_threshold_check;
alter table cohort add constraint cohort_suppression_threshold_check
    check (suppression_threshold between 5 and 50);
alter table cohort drop column count_rounding;

-- The query log no longer keeps exact counts or the conditions of the
-- differencing check (which the anchors below replace), and records what each
-- query cost of which cohorts' budgets.
alter table discovery_query drop column conditions;
alter table discovery_query drop column subjects;
alter table discovery_query drop column refused;
alter table discovery_query add column units integer not null default 0
    constraint discovery_query_units_check check (units >= 0);
alter table discovery_query add column cohorts text[] not null default '{}';
create index discovery_query_repeat_idx on discovery_query (username, criteria_hash, kind);

-- Every cell answered under protection: its true number of subjects, the
-- strictest threshold among them (0: none), an invertible sketch of their
-- record keys (256 cells of 20 bytes) and the counts it was answered with
-- (null: suppressed). A later cell within that many subjects of one gets its
-- answer, and is written as an anchor of that answer itself.
create table discovery_anchor (
    discovery_anchor_id bigint generated always as identity primary key,
    subjects            bigint not null,
    threshold           integer not null,
    sketch              bytea not null constraint discovery_anchor_sketch_check check (octet_length(sketch) = 5120),
    published           bigint[] constraint discovery_anchor_published_check
        check (published is null or cardinality(published) = 4),
    created_at          timestamptz not null default now()
);
create index discovery_anchor_subjects_idx on discovery_anchor (subjects);
