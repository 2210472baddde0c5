-- The audit log: append-only and hash-chained.
--
-- hash = SHA-256(prev_hash || canonical JSON of (seq, occurred_at, actor, action,
-- target, details)); see src/audit/chain.rs. Every writer locks `audit_head`, so
-- concurrent transactions append in one order and the chain never forks.

create table audit_event (
    seq         bigint primary key,
    occurred_at timestamptz not null,
    actor       text not null,
    action      text not null,
    target      text,
    details     jsonb not null default '{}',
    prev_hash   bytea not null,
    hash        bytea not null
);
create index audit_event_actor_idx on audit_event (actor, seq);
create index audit_event_action_idx on audit_event (action, seq);
create index audit_event_target_idx on audit_event (target, seq);
create index audit_event_time_idx on audit_event (occurred_at);

create table audit_head (
    -- exactly one row
    singleton boolean primary key default true constraint audit_head_singleton check (singleton),
    seq       bigint not null,
    hash      bytea not null
);
-- genesis: sequence 0 with an all-zero hash
insert into audit_head (seq, hash) values (0, decode(repeat('00', 32), 'hex'));

create function audit_event_refuse_change() returns trigger as $$
begin
    raise exception 'audit_event is append-only: % refused', tg_op
        using errcode = 'insufficient_privilege';
end;
$$ language plpgsql;

create trigger audit_event_append_only
    before update or delete on audit_event
    for each row execute function audit_event_refuse_change();
create trigger audit_event_no_truncate
    before truncate on audit_event
    for each statement execute function audit_event_refuse_change();
-- fire even under session_replication_role = replica
alter table audit_event enable always trigger audit_event_append_only;
alter table audit_event enable always trigger audit_event_no_truncate;
