-- Dictionary coverage under the cell key method, like every other protected
-- count: each (field, cohort) cell is kept per threshold class of its subjects
-- (the strictest threshold of the cohorts each subject belongs to) with the
-- sum of their record keys modulo 2^64, so the dictionary can publish the
-- perturbed count that discovery would publish for the same set of subjects.
-- The old rounded rows are dropped and rebuilt by the coverage job, queued
-- here when there is anything to cover.
delete from field_coverage;
alter table field_coverage drop constraint field_coverage_pkey;
alter table field_coverage add column threshold integer not null
    constraint field_coverage_threshold_check check (threshold between 5 and 50);
alter table field_coverage add column key_sum bigint not null;
alter table field_coverage add primary key (field_id, cohort_id, threshold);

insert into job (kind, payload, dedupe_key, run_at, max_attempts)
select 'dictionary.coverage', '{}', 'dictionary.coverage', now(), 5
where exists (select 1 from subject)
on conflict (dedupe_key) where state in ('queued', 'running') do nothing;
