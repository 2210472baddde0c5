-- Clinical, lab, proteomic, diagnosis and genomic data of subjects, the data
-- dictionary that describes what can be discovered, and the imports that
-- bring tables in. Subjects are the pseudonymized subjects of the imaging
-- catalog; dates are shifted by the subject's offset; no original identifier
-- or date is stored.

-- The data dictionary (the registry's "showcase"). `builtin` fields are
-- columns of the catalog (sex, modality, ...); `observation` fields are rows
-- of `observation`, numeric in the field's canonical unit or coded.
create table field (
    field_id      text primary key
        constraint field_id_format check (field_id ~ '^[a-z][a-z0-9_]{0,62}$'),
    title         text not null,
    description   text not null default '',
    category      text not null
        constraint field_category_check check (category in (
            'registry', 'demographics', 'anthropometry', 'vital-signs', 'lifestyle', 'laboratory',
            'proteomics', 'diagnoses', 'genomics', 'imaging', 'annotations')),
    value_type    text not null
        constraint field_value_type_check check (value_type in ('number', 'integer', 'code', 'genotype', 'presence')),
    source        text not null constraint field_source_check check (source in ('builtin', 'observation')),
    -- canonical UCUM unit of numeric observation values
    unit          text,
    -- the coding system of the field itself (LOINC for a lab) or of its coded values
    coding_system text,
    code          text,
    -- g/mol of the analyte: converts mass and substance concentrations
    molar_mass    double precision constraint field_molar_mass_check check (molar_mass > 0),
    -- plausible range in the canonical unit; imports refuse values outside it
    min_value     double precision,
    max_value     double precision,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    constraint field_range_check check (min_value is null or max_value is null or min_value <= max_value),
    constraint field_observation_unit_check check (source = 'builtin' or value_type <> 'number' or unit is not null)
);
select trigger_updated_at('field');
create unique index field_code_key on field (coding_system, code) where source = 'observation' and code is not null;

-- Every table import, for the audit trail and for provenance of its rows.
create table data_import (
    data_import_id uuid primary key default gen_random_uuid(),
    kind           text not null
        constraint data_import_kind_check check (kind in ('subjects', 'observations', 'diagnoses', 'variants')),
    format         text not null,
    cohort_id      uuid not null references cohort (cohort_id),
    site_id        uuid not null references site (site_id),
    created_by     text not null,
    row_count      integer not null,
    subjects_created integer not null,
    created_at     timestamptz not null default now()
);

-- Clinical, lab and proteomic values.
create table observation (
    observation_id bigint generated always as identity primary key,
    subject_id     uuid not null references subject (subject_id),
    field_id       text not null references field (field_id),
    -- in the field's canonical unit
    value          double precision,
    value_code     text,
    -- shifted by the subject's date offset
    observed_at    timestamp,
    data_import_id uuid not null references data_import (data_import_id),
    constraint observation_value_check check ((value is null) <> (value_code is null))
);
create index observation_field_value_idx on observation (field_id, value, subject_id);
create index observation_field_code_idx on observation (field_id, value_code, subject_id) where value_code is not null;
create index observation_subject_idx on observation (subject_id);

create table diagnosis (
    diagnosis_id   bigint generated always as identity primary key,
    subject_id     uuid not null references subject (subject_id),
    system         text not null constraint diagnosis_system_check check (system in ('ICD-10', 'SNOMED CT')),
    code           text not null,
    -- shifted by the subject's date offset
    diagnosed_on   date,
    data_import_id uuid not null references data_import (data_import_id)
);
create index diagnosis_code_idx on diagnosis (system, code text_pattern_ops, subject_id);
create index diagnosis_subject_idx on diagnosis (subject_id);

-- Biallelic variants (multi-allelic sites are split, one row per alternate allele).
create table variant (
    variant_id bigint generated always as identity primary key,
    assembly   text not null default 'GRCh38',
    chrom      text not null,
    pos        bigint not null constraint variant_pos_check check (pos > 0),
    ref        text not null,
    alt        text not null,
    rsid       text,
    gene       text,
    constraint variant_key unique (assembly, chrom, pos, ref, alt)
);
create index variant_rsid_idx on variant (rsid) where rsid is not null;

create table genotype (
    variant_id     bigint not null references variant (variant_id),
    subject_id     uuid not null references subject (subject_id),
    -- copies of the alternate allele; null when the call is missing
    alt_count      smallint constraint genotype_alt_count_check check (alt_count between 0 and 2),
    data_import_id uuid not null references data_import (data_import_id),
    primary key (variant_id, subject_id)
);
create index genotype_subject_idx on genotype (subject_id);

-- Subjects per field and cohort, refreshed by a job after imports and commits;
-- the public dictionary shows them suppressed.
create table field_coverage (
    field_id   text not null references field (field_id) on delete cascade,
    cohort_id  uuid not null references cohort (cohort_id),
    subjects   bigint not null,
    updated_at timestamptz not null default now(),
    primary key (field_id, cohort_id)
);

insert into field (field_id, title, description, category, value_type, source, unit, coding_system, code, molar_mass, min_value, max_value) values
-- registry and imaging: columns of the catalog
('cohort', 'Cohort', 'The cohort a subject belongs to.', 'registry', 'code', 'builtin', null, null, null, null, null, null),
('site', 'Site', 'The site (hospital) the data comes from.', 'registry', 'code', 'builtin', null, null, null, null, null, null),
('sex', 'Sex', 'Sex as recorded: M, F or O (DICOM Patient''s Sex or the clinical table).', 'demographics', 'code', 'builtin', null, 'DICOM', '(0010,0040)', null, null, null),
('birth_year', 'Year of birth', 'Year of birth; the full birth date is never stored.', 'demographics', 'integer', 'builtin', 'a', null, null, null, 1880, 2100),
('age_at_study', 'Age at study', 'Age in years on the day of an imaging study, computed before the birth date is removed.', 'demographics', 'number', 'builtin', 'a', 'DICOM', '(0010,1010)', null, 0, 130),
('modality', 'Modality', 'Imaging modality of a series (MR, CT, CR, DX, US, PT, NM, XC, ...).', 'imaging', 'code', 'builtin', null, 'DICOM', '(0008,0060)', null, null, null),
('body_part', 'Body part examined', 'Body Part Examined of a series (HEAD, CHEST, ...).', 'imaging', 'code', 'builtin', null, 'DICOM', '(0018,0015)', null, null, null),
('manufacturer', 'Scanner manufacturer', 'Manufacturer of the scanner: an axis of the site effect.', 'imaging', 'code', 'builtin', null, 'DICOM', '(0008,0070)', null, null, null),
('model', 'Scanner model', 'Manufacturer''s model name of the scanner.', 'imaging', 'code', 'builtin', null, 'DICOM', '(0008,1090)', null, null, null),
('field_strength', 'Magnetic field strength', 'Field strength of an MR scanner in tesla.', 'imaging', 'number', 'builtin', 'T', 'DICOM', '(0018,0087)', null, 0, 20),
('diagnosis', 'Diagnosis', 'Diagnoses coded in ICD-10 or SNOMED CT, with shifted dates.', 'diagnoses', 'code', 'builtin', null, 'ICD-10 | SNOMED CT', null, null, null, null),
('genotype', 'Variant genotype', 'Genotype (copies of the alternate allele) of a variant given by rsID or chrom-pos-ref-alt, with its gene.', 'genomics', 'genotype', 'builtin', null, 'dbSNP', null, null, 0, 2),
('annotation', 'Annotation', 'Annotations: segmentations, contours, landmarks, boxes and labels, with provenance.', 'annotations', 'presence', 'builtin', null, null, null, null, null, null),
-- anthropometry and vital signs
('height', 'Body height', 'Standing height.', 'anthropometry', 'number', 'observation', 'cm', 'LOINC', '8302-2', null, 30, 260),
('weight', 'Body weight', 'Body weight.', 'anthropometry', 'number', 'observation', 'kg', 'LOINC', '29463-7', null, 0.3, 400),
('bmi', 'Body mass index', 'Body mass index; computed from height and weight when a row has both and no BMI.', 'anthropometry', 'number', 'observation', 'kg/m2', 'LOINC', '39156-5', null, 8, 120),
('systolic_bp', 'Systolic blood pressure', 'Systolic blood pressure.', 'vital-signs', 'number', 'observation', 'mm[Hg]', 'LOINC', '8480-6', null, 40, 300),
('diastolic_bp', 'Diastolic blood pressure', 'Diastolic blood pressure.', 'vital-signs', 'number', 'observation', 'mm[Hg]', 'LOINC', '8462-4', null, 20, 200),
('heart_rate', 'Heart rate', 'Heart rate.', 'vital-signs', 'number', 'observation', '/min', 'LOINC', '8867-4', null, 20, 300),
('smoking_status', 'Tobacco smoking status', 'Coded in SNOMED CT: 266919005 never, 8517006 former, 77176002 current smoker.', 'lifestyle', 'code', 'observation', null, 'LOINC', '72166-2', null, null, null),
-- laboratory
('hba1c', 'Haemoglobin A1c', 'Haemoglobin A1c / total haemoglobin in blood.', 'laboratory', 'number', 'observation', '%', 'LOINC', '4548-4', null, 2, 25),
('glucose', 'Glucose', 'Glucose in serum or plasma.', 'laboratory', 'number', 'observation', 'mmol/L', 'LOINC', '2345-7', 180.156, 0.5, 60),
('glucose_fasting', 'Fasting glucose', 'Fasting glucose in serum or plasma.', 'laboratory', 'number', 'observation', 'mmol/L', 'LOINC', '1558-6', 180.156, 0.5, 60),
('creatinine', 'Creatinine', 'Creatinine in serum or plasma.', 'laboratory', 'number', 'observation', 'umol/L', 'LOINC', '2160-0', 113.12, 5, 3000),
('egfr', 'eGFR (CKD-EPI)', 'Glomerular filtration rate per 1.73 m², estimated from creatinine (CKD-EPI).', 'laboratory', 'number', 'observation', 'mL/min/{1.73_m2}', 'LOINC', '62238-1', null, 1, 200),
('cholesterol_total', 'Total cholesterol', 'Cholesterol in serum or plasma.', 'laboratory', 'number', 'observation', 'mmol/L', 'LOINC', '2093-3', 386.654, 0.5, 30),
('ldl_cholesterol', 'LDL cholesterol', 'LDL cholesterol in serum or plasma.', 'laboratory', 'number', 'observation', 'mmol/L', 'LOINC', '2089-1', 386.654, 0.1, 25),
('hdl_cholesterol', 'HDL cholesterol', 'HDL cholesterol in serum or plasma.', 'laboratory', 'number', 'observation', 'mmol/L', 'LOINC', '2085-9', 386.654, 0.05, 10),
('triglycerides', 'Triglycerides', 'Triglyceride in serum or plasma.', 'laboratory', 'number', 'observation', 'mmol/L', 'LOINC', '2571-8', 885.7, 0.05, 100),
('crp', 'C-reactive protein', 'C reactive protein in serum or plasma.', 'laboratory', 'number', 'observation', 'mg/L', 'LOINC', '1988-5', null, 0, 1000),
('hemoglobin', 'Haemoglobin', 'Haemoglobin in blood.', 'laboratory', 'number', 'observation', 'g/L', 'LOINC', '718-7', null, 10, 300),
('leukocytes', 'Leukocytes', 'Leukocytes in blood, automated count.', 'laboratory', 'number', 'observation', '10*9/L', 'LOINC', '6690-2', null, 0, 500),
('platelets', 'Platelets', 'Platelets in blood, automated count.', 'laboratory', 'number', 'observation', '10*9/L', 'LOINC', '777-3', null, 0, 3000),
('alt', 'Alanine aminotransferase', 'ALT enzymatic activity in serum or plasma.', 'laboratory', 'number', 'observation', 'U/L', 'LOINC', '1742-6', null, 0, 20000),
('ast', 'Aspartate aminotransferase', 'AST enzymatic activity in serum or plasma.', 'laboratory', 'number', 'observation', 'U/L', 'LOINC', '1920-8', null, 0, 20000),
('tsh', 'Thyrotropin', 'TSH in serum or plasma.', 'laboratory', 'number', 'observation', 'm[IU]/L', 'LOINC', '3016-3', null, 0, 1000),
('psa', 'Prostate specific antigen', 'PSA in serum or plasma.', 'laboratory', 'number', 'observation', 'ng/mL', 'LOINC', '2857-1', null, 0, 10000),
('troponin_t_hs', 'Troponin T (high sensitivity)', 'Cardiac troponin T in serum or plasma, high-sensitivity method.', 'laboratory', 'number', 'observation', 'ng/L', 'LOINC', '67151-1', null, 0, 100000),
('nt_probnp', 'NT-proBNP', 'Natriuretic peptide B prohormone N-terminal in serum or plasma.', 'laboratory', 'number', 'observation', 'pg/mL', 'LOINC', '33762-6', null, 0, 100000),
('sodium', 'Sodium', 'Sodium in serum or plasma.', 'laboratory', 'number', 'observation', 'mmol/L', 'LOINC', '2951-2', null, 80, 200),
('potassium', 'Potassium', 'Potassium in serum or plasma.', 'laboratory', 'number', 'observation', 'mmol/L', 'LOINC', '2823-3', null, 1, 12),
('albumin', 'Albumin', 'Albumin in serum or plasma.', 'laboratory', 'number', 'observation', 'g/L', 'LOINC', '1751-7', null, 5, 80),
-- proteomics: affinity-assay markers in NPX, coded by UniProt accession
('prot_il6', 'Interleukin-6 (IL6)', 'Relative abundance of IL6 (UniProt P05231), NPX.', 'proteomics', 'number', 'observation', '{NPX}', 'UniProt', 'P05231', null, -20, 40),
('prot_tnf', 'Tumor necrosis factor (TNF)', 'Relative abundance of TNF (UniProt P01375), NPX.', 'proteomics', 'number', 'observation', '{NPX}', 'UniProt', 'P01375', null, -20, 40),
('prot_gdf15', 'Growth/differentiation factor 15 (GDF15)', 'Relative abundance of GDF15 (UniProt Q99988), NPX.', 'proteomics', 'number', 'observation', '{NPX}', 'UniProt', 'Q99988', null, -20, 40),
('prot_nefl', 'Neurofilament light (NEFL)', 'Relative abundance of NEFL (UniProt P07196), NPX.', 'proteomics', 'number', 'observation', '{NPX}', 'UniProt', 'P07196', null, -20, 40),
('prot_klk3', 'Kallikrein-3 (KLK3, PSA)', 'Relative abundance of KLK3 (UniProt P07288), NPX.', 'proteomics', 'number', 'observation', '{NPX}', 'UniProt', 'P07288', null, -20, 40);
