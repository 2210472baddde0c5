-- Withdrawal of consent: full (the subject leaves discovery and every future
-- extract) or of imaging only (their images leave; their tables stay). Every
-- project that may hold the subject's data gets a notice that lists the
-- subject under the project's own pseudonym, to be acknowledged by its PI.

alter table subject add column withdrawal_scope text
    constraint subject_withdrawal_scope_check check (withdrawal_scope in ('full', 'imaging'));

create table withdrawal_notice (
    notice_id       uuid primary key default gen_random_uuid(),
    project_id      uuid not null references project (project_id),
    subject_id      uuid not null references subject (subject_id),
    scope           text not null constraint withdrawal_notice_scope_check check (scope in ('full', 'imaging')),
    -- the subject as the project knows it: HMAC of the registry pseudonym under the project's key
    project_pseudonym text not null,
    created_at      timestamptz not null default now(),
    acknowledged_at timestamptz,
    acknowledged_by text
);
create index withdrawal_notice_project_idx on withdrawal_notice (project_id, created_at);
create index withdrawal_notice_open_idx on withdrawal_notice (created_at) where acknowledged_at is null;

-- The index of published series leaves out subjects who withdrew imaging.
create or replace function refresh_discovery_series(ids uuid[]) returns void language sql as $$
    delete from discovery_series where series_id = any (ids);
    insert into discovery_series (series_id, study_id, subject_id, cohort_id, site_id, modality, body_part,
                                  manufacturer, model, field_strength, age_years, study_date, instances)
    select se.series_id, st.study_id, st.subject_id, st.cohort_id, st.site_id, se.modality, se.body_part,
           nullif(sc.manufacturer, ''), nullif(sc.model, ''), sc.field_strength, st.age_years, st.study_date, n.instances
    from series se
    join study st using (study_id)
    join subject su on su.subject_id = st.subject_id and su.withdrawal_scope is null
    left join scanner sc using (scanner_id)
    join (select series_id, count(*)::integer as instances
          from instance where series_id = any (ids) and status = 'published' group by series_id) n using (series_id)
    where se.series_id = any (ids);
$$;
