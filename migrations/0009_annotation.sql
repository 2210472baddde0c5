-- Annotations: low level (segmentations, contours, landmarks, boxes) and
-- high level (coded labels), on a subject, study, series or instance, each
-- with its provenance. DICOM SEG and RTSTRUCT instances become annotations of
-- the series they reference when their session is committed.

create table annotation (
    annotation_id       uuid primary key default gen_random_uuid(),
    subject_id          uuid not null references subject (subject_id),
    study_id            uuid references study (study_id),
    series_id           uuid references series (series_id),
    instance_id         uuid references instance (instance_id) on delete cascade,
    target              text not null constraint annotation_target_check
        check (target in ('subject', 'study', 'series', 'instance')),
    level               text not null constraint annotation_level_check check (level in ('low', 'high')),
    kind                text not null constraint annotation_kind_check
        check (kind in ('segmentation', 'contour', 'landmark', 'box', 'label')),
    source              text not null constraint annotation_source_check
        check (source in ('dicom-seg', 'dicom-rtstruct', 'nifti', 'json')),
    -- the SEG or RTSTRUCT instance an annotation was read from
    source_instance_id  uuid references instance (instance_id) on delete cascade,
    -- what is annotated (a finding, an organ, a diagnosis)
    coding_system       text,
    code                text,
    meaning             text,
    -- the payload (NIfTI mask, JSON geometry) in the object store
    object_key          text constraint annotation_object_key_key unique,
    size_bytes          bigint,
    sha256              bytea,
    -- provenance
    annotator_role      text constraint annotation_role_check
        check (annotator_role in ('radiologist', 'resident', 'technologist', 'clinician', 'student', 'algorithm', 'other')),
    annotator_expertise text,
    annotator_years     integer constraint annotation_years_check check (annotator_years between 0 and 80),
    tool                text,
    method              text constraint annotation_method_check
        check (method in ('manual', 'semi-automatic', 'automatic')),
    annotated_at        timestamptz,
    created_by          text not null,
    created_at          timestamptz not null default now(),
    constraint annotation_level_kind_check check ((level = 'high') = (kind = 'label'))
);
create index annotation_subject_idx on annotation (subject_id);
create index annotation_series_idx on annotation (series_id);
create index annotation_source_idx on annotation (source_instance_id);

-- (Re)links the SEG and RTSTRUCT instances `ids` to the series their
-- referenced images belong to, or to their own study while none is known.
create function link_dicom_annotations(ids uuid[]) returns void language sql as $$
    delete from annotation where source_instance_id = any (ids);
    insert into annotation (subject_id, study_id, series_id, target, level, kind, source, source_instance_id, created_by)
    select st.subject_id,
           coalesce(ref.study_id, st.study_id),
           ref.series_id,
           case when ref.series_id is null then 'study' else 'series' end,
           'low',
           case when i.sop_class_uid = '1.2.840.10008.5.1.4.1.1.66.4' then 'segmentation' else 'contour' end,
           case when i.sop_class_uid = '1.2.840.10008.5.1.4.1.1.66.4' then 'dicom-seg' else 'dicom-rtstruct' end,
           i.instance_id,
           'ingest'
    from instance i
    join series se on se.series_id = i.series_id
    join study st on st.study_id = se.study_id
    left join lateral (
        select distinct r.series_id, rs.study_id
        from instance r join series rs on rs.series_id = r.series_id
        where r.sop_uid = any (i.referenced_sop_uids) and r.status = 'published'
    ) ref on true
    where i.instance_id = any (ids) and i.status = 'published'
      and i.sop_class_uid in ('1.2.840.10008.5.1.4.1.1.66.4', '1.2.840.10008.5.1.4.1.1.481.3');
$$;
