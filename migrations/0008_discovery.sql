-- Discovery: an index of published series with everything a count filters
-- or breaks down by, kept current in the transaction that publishes or
-- withdraws instances; and the log of discovery queries that the daily
-- budget and the differencing check read.

create table discovery_series (
    series_id      uuid primary key references series (series_id) on delete cascade,
    study_id       uuid not null,
    subject_id     uuid not null references subject (subject_id),
    cohort_id      uuid not null,
    site_id        uuid not null,
    modality       text,
    body_part      text,
    manufacturer   text,
    model          text,
    field_strength double precision,
    age_years      double precision,
    study_date     date,
    -- published instances of the series
    instances      integer not null constraint discovery_series_instances_check check (instances > 0)
);
create index discovery_series_subject_idx on discovery_series (subject_id);

-- Recomputes the index rows of the given series from the catalog.
create function refresh_discovery_series(ids uuid[]) returns void language sql as $$
    delete from discovery_series where series_id = any (ids);
    insert into discovery_series (series_id, study_id, subject_id, cohort_id, site_id, modality, body_part,
                                  manufacturer, model, field_strength, age_years, study_date, instances)
    select se.series_id, st.study_id, st.subject_id, st.cohort_id, st.site_id, se.modality, se.body_part,
           nullif(sc.manufacturer, ''), nullif(sc.model, ''), sc.field_strength, st.age_years, st.study_date, n.instances
    from series se
    join study st using (study_id)
    left join scanner sc using (scanner_id)
    join (select series_id, count(*)::integer as instances
          from instance where series_id = any (ids) and status = 'published' group by series_id) n using (series_id)
    where se.series_id = any (ids);
$$;

select refresh_discovery_series(array(select series_id from series));

-- Counts are rounded to this base (and suppressed below the threshold).
alter table cohort add column count_rounding integer not null default 5
    constraint cohort_count_rounding_check check (count_rounding >= 1);

create table discovery_query (
    discovery_query_id bigint generated always as identity primary key,
    username           text not null,
    kind               text not null constraint discovery_query_kind_check check (kind in ('count', 'breakdown')),
    -- SHA-256 of the canonical criteria
    criteria_hash      text not null,
    -- hashes of the top-level conditions, to recognise a query that adds or drops one
    conditions         text[] not null,
    -- exact, for the differencing check only; never shown to whom counts are suppressed
    subjects           bigint not null,
    refused            boolean not null default false,
    created_at         timestamptz not null default now()
);
create index discovery_query_user_idx on discovery_query (username, created_at);
