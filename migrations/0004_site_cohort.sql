-- Sites (the hospitals data comes from) and cohorts (the collections researchers apply for).

create table site (
    site_id    uuid primary key default gen_random_uuid(),
    code       text not null constraint site_code_key unique
        constraint site_code_format check (code ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    name       text not null,
    -- ISO 3166-1 alpha-2
    country    text constraint site_country_format check (country ~ '^[A-Z]{2}$'),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
select trigger_updated_at('site');

create table cohort (
    cohort_id             uuid primary key default gen_random_uuid(),
    slug                  text not null constraint cohort_slug_key unique
        constraint cohort_slug_format check (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    title                 text not null,
    description           text not null default '',
    tier                  text not null constraint cohort_tier_check
        check (tier in ('open', 'registered', 'controlled')),
    design                text not null constraint cohort_design_check
        check (design in ('retrospective', 'prospective')),
    source                text not null constraint cohort_source_check
        check (source in ('registry', 'clinical', 'challenge')),
    license               text,
    citation              text,
    -- counts below this are suppressed in discovery
    suppression_threshold integer not null default 10
        constraint cohort_suppression_threshold_check check (suppression_threshold >= 1),
    created_at            timestamptz not null default now(),
    updated_at            timestamptz not null default now()
);
select trigger_updated_at('cohort');

-- A fresh registry accepts a first upload without any set-up.
insert into site (code, name) values ('local', 'Local site');
insert into cohort (slug, title, description, tier, design, source)
values ('default', 'Default cohort', 'Data uploaded without a named cohort.', 'controlled', 'retrospective', 'registry');
