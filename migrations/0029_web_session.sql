-- Sessions of the web interface (src/web/session.rs). The browser holds an
-- opaque random id in an HttpOnly cookie; only its SHA-256 is stored, so a
-- copy of this table signs nobody in. A row without a username is a visitor
-- who opened the sign-in form: it carries only the form's CSRF token, and is
-- replaced by a new row (a new id) on sign-in. A session made from a personal
-- API token ends with that token (revoked or expired), and with its own expiry.
create table web_session (
    session_hash bytea primary key constraint web_session_hash_length_check check (length(session_hash) = 32),
    username     text,
    roles        text[] not null default '{}',
    api_token_id uuid references api_token (api_token_id) on delete cascade,
    csrf_token   text not null,
    created_at   timestamptz not null default now(),
    expires_at   timestamptz not null
);

create index web_session_expires_at_idx on web_session (expires_at);
