-- The DICOM instances of a release, indexed when the build writes them
-- (src/release/dicomweb.rs) so DICOMweb searches over a release (QIDO-RS)
-- answer from the database. Everything here is in the project's pseudonyms
-- and UIDs, exactly as the release's files: never a registry UID or pseudonym.
create table extract_instance (
    extract_id      uuid not null references extract (extract_id),
    study_uid       text not null,
    series_uid      text not null,
    sop_uid         text not null,
    sop_class_uid   text not null,
    transfer_syntax text not null,
    -- the project's subject ID (Patient ID and Patient's Name of the file)
    patient_id      text not null,
    modality        text,
    -- DA as stored (YYYYMMDD, already shifted), compared as text
    study_date      text,
    series_number   integer,
    instance_number integer,
    -- the file's path in the release (extract_file.path, once written)
    path            text not null,
    -- bytes before Pixel Data (the whole file without one): what metadata reads
    header_size     bigint not null,
    -- the study, series and instance attributes searches return, as DICOM JSON
    attributes      jsonb not null,
    primary key (extract_id, sop_uid)
);
create index extract_instance_series_idx on extract_instance (extract_id, study_uid, series_uid, instance_number);
