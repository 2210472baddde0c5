-- People known to Custodian and their personal API tokens.

create table app_user (
    user_id      uuid primary key default gen_random_uuid(),
    -- the `sub` (or configured claim) of the tokens that identify this person
    username     text not null constraint app_user_username_key unique,
    display_name text,
    -- roles last seen in the person's identity token
    roles        text[] not null default '{}'
        constraint app_user_roles_check
        check (roles <@ array['admin', 'steward', 'organizer', 'uploader', 'researcher']),
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now()
);
select trigger_updated_at('app_user');

create table api_token (
    api_token_id uuid primary key default gen_random_uuid(),
    user_id      uuid not null references app_user (user_id),
    name         text not null,
    -- SHA-256 of the token: the token itself is shown once and never stored
    token_hash   bytea not null constraint api_token_token_hash_key unique,
    -- the first characters of the token, so its owner can tell tokens apart
    token_prefix text not null,
    -- a subset of the owner's roles, fixed when the token is made
    roles        text[] not null
        constraint api_token_roles_check
        check (roles <@ array['admin', 'steward', 'organizer', 'uploader', 'researcher']),
    created_at   timestamptz not null default now(),
    expires_at   timestamptz not null,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
create index api_token_user_idx on api_token (user_id, created_at);
