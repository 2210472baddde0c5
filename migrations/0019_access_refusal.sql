-- Refused data requests (grant suspended, revoked, expired, closed, outside
-- its scope, ...), counted per user, project, code and hour. The first of each
-- hour is an audit event; the rest add to its count here, so a retry loop
-- cannot flood the audit log, and the next hour's event carries the count.
create table access_refusal (
    username   text not null,
    project_id uuid not null,
    code       text not null,
    hour       timestamptz not null,
    refusals   integer not null default 1 constraint access_refusal_refusals_check check (refusals >= 1),
    primary key (username, project_id, code, hour)
);
