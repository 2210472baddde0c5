-- Two sessions that publish slices of the same series at once (a PACS sending
-- one study over several associations) both refresh that series' discovery
-- row. Each now first takes a transaction-scoped lock per series, in one
-- order: the second waits for the first to commit, then (each statement of a
-- volatile function sees what committed before it) counts the first one's
-- instances too, instead of failing on the row the first inserted.
create or replace function refresh_discovery_series(ids uuid[]) returns void language sql as $$
    select count(pg_advisory_xact_lock(7301, hashtext(id::text)))
    from (select distinct id from unnest(ids) as id order by id) locked;
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
