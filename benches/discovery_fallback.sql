-- Discovery's PostgreSQL fallback: the same counts with the old and the new
-- `from` clause (see docs/benchmarks.md). Run against a registry made by
-- `custodian demo --subjects 100000 --catalog-only`:  psql -d DATABASE -f benches/discovery_fallback.sql
\timing on
set jit = off;
select count(*) from discovery_series; select count(*) from cohort_subject;
\echo old-cohort
select count(distinct s.subject_id), count(distinct d.study_id), count(d.series_id) from subject s left join discovery_series d on d.subject_id = s.subject_id where s.withdrawn_at is null and (case when d.series_id is null then s.subject_id in (select cs.subject_id from cohort_subject cs join cohort c using (cohort_id) where c.slug = any('{demo-neuro-mri}')) else d.cohort_id in (select cohort_id from cohort where slug = any('{demo-neuro-mri}')) end);
\echo new-cohort
select count(distinct s.subject_id), count(distinct d.study_id), count(d.series_id) from subject s left join (select series_id, study_id, subject_id, cohort_id, modality, body_part, manufacturer, model, field_strength, age_years, study_date, instances from discovery_series union all select null, null, cs.subject_id, cs.cohort_id, null, null, null, null, null, null, null, null from cohort_subject cs where not exists (select 1 from discovery_series x where x.subject_id = cs.subject_id and x.cohort_id = cs.cohort_id)) d on d.subject_id = s.subject_id where s.withdrawn_at is null and (d.cohort_id is not null and d.cohort_id in (select cohort_id from cohort where slug = any('{demo-neuro-mri}')));
\echo old-subject
select count(distinct s.subject_id), count(distinct d.study_id), count(d.series_id) from subject s left join discovery_series d on d.subject_id = s.subject_id where s.withdrawn_at is null and s.sex = 'F' and s.subject_id in (select subject_id from diagnosis where code like 'E11%');
\echo new-subject
select count(distinct s.subject_id), count(distinct d.study_id), count(d.series_id) from subject s left join (select series_id, study_id, subject_id, cohort_id, modality, body_part, manufacturer, model, field_strength, age_years, study_date, instances from discovery_series union all select null, null, cs.subject_id, cs.cohort_id, null, null, null, null, null, null, null, null from cohort_subject cs where not exists (select 1 from discovery_series x where x.subject_id = cs.subject_id and x.cohort_id = cs.cohort_id)) d on d.subject_id = s.subject_id where s.withdrawn_at is null and s.sex = 'F' and s.subject_id in (select subject_id from diagnosis where code like 'E11%');
