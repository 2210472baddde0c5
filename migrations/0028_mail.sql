-- E-mail delivery of notifications: one delivery per person a notification
-- reaches by e-mail, enqueued with it, and what became of it. The notification
-- itself stays the record; a delivery that fails loses nothing.

create table mail_delivery (
    delivery_id     uuid primary key default gen_random_uuid(),
    notification_id uuid not null references notification (notification_id),
    username        text not null,
    -- `queued` until sent; `failed` after a permanent refusal or the last
    -- retry; `skipped` when e-mail was off or the address went away
    state           text not null default 'queued'
        constraint mail_delivery_state_check check (state in ('queued', 'sent', 'failed', 'skipped')),
    attempts        integer not null default 0,
    last_error      text,
    created_at      timestamptz not null default now(),
    sent_at         timestamptz
);
create index mail_delivery_notification_idx on mail_delivery (notification_id);

-- Who wants which notifications by e-mail. No row: every kind, by e-mail.
create table notification_preference (
    username    text primary key,
    email       boolean not null default true,
    -- kinds not wanted by e-mail, e.g. `application.submitted`
    muted_kinds text[] not null default '{}',
    updated_at  timestamptz not null default now()
);
