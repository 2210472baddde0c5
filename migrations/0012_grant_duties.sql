-- What comes with a grant: the fee of access (a schedule per cohort tier,
-- settled by payment or waiver before the grant takes effect), renewals asked
-- for with a progress report, the duties of the project (progress reports,
-- return of results, deletion attestation) with their due dates, and the
-- notifications people must act on.

create table fee_schedule (
    tier             text primary key constraint fee_schedule_tier_check check (tier in ('open', 'registered', 'controlled')),
    -- in the currency's minor unit (cents)
    access_fee       bigint not null default 0 constraint fee_schedule_access_fee_check check (access_fee >= 0),
    -- due at each renewal
    maintenance_fee  bigint not null default 0 constraint fee_schedule_maintenance_fee_check check (maintenance_fee >= 0),
    currency         text not null default 'EUR' constraint fee_schedule_currency_check check (currency ~ '^[A-Z]{3}$'),
    updated_at       timestamptz not null default now()
);
insert into fee_schedule (tier) values ('open'), ('registered'), ('controlled');

-- A fee owed by a project: at approval (access) or renewal (maintenance).
create table fee (
    fee_id         uuid primary key default gen_random_uuid(),
    application_id uuid not null references application (application_id),
    grant_id       uuid,
    kind           text not null constraint fee_kind_check check (kind in ('access', 'maintenance')),
    amount         bigint not null constraint fee_amount_check check (amount >= 0),
    currency       text not null,
    settlement     text constraint fee_settlement_check check (settlement in ('paid', 'waived')),
    -- a payment reference, or why it was waived (e.g. student, low-income country)
    settlement_note text,
    settled_by     text,
    settled_at     timestamptz,
    created_at     timestamptz not null default now(),
    constraint fee_settled_check check ((settlement is null) = (settled_at is null))
);
create index fee_application_idx on fee (application_id);

create table grant_renewal (
    renewal_id      uuid primary key default gen_random_uuid(),
    grant_id        uuid not null,
    requested_by    text not null,
    months          integer not null constraint grant_renewal_months_check check (months between 1 and 60),
    progress_report text not null,
    state           text not null default 'requested'
        constraint grant_renewal_state_check check (state in ('requested', 'approved', 'rejected')),
    decided_by      text,
    decided_at      timestamptz,
    reason          text,
    created_at      timestamptz not null default now()
);
create unique index grant_renewal_open on grant_renewal (grant_id) where state = 'requested';

create table obligation (
    obligation_id uuid primary key default gen_random_uuid(),
    grant_id      uuid not null,
    project_id    uuid not null references project (project_id),
    kind          text not null constraint obligation_kind_check
        check (kind in ('progress_report', 'results_return', 'deletion_attestation')),
    due_on        date not null,
    fulfilled_at  timestamptz,
    fulfilled_by  text,
    -- the report, a pointer to returned results, the attestation
    statement     text,
    created_at    timestamptz not null default now()
);
create index obligation_project_idx on obligation (project_id, due_on);
create index obligation_open_idx on obligation (grant_id, due_on) where fulfilled_at is null;

-- Things a person (or every steward: `role:steward`) must act on. Delivery by
-- e-mail is optional; the outbox is the record.
create table notification (
    notification_id uuid primary key default gen_random_uuid(),
    recipient       text not null,
    kind            text not null,
    subject         text not null,
    -- what it is about, e.g. `application:<id>`
    target          text,
    created_at      timestamptz not null default now(),
    read_at         timestamptz
);
create index notification_recipient_idx on notification (recipient, created_at desc);
