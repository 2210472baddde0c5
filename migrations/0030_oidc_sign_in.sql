-- Sign-ins through the OIDC issuer in progress (src/web/oidc.rs). A row binds
-- the `state` sent to the identity provider to the visitor's pre-sign-in
-- session; the callback consumes it, so a state is good for one answer.
-- Only hashes are kept: the state and the nonce travel through the browser,
-- and the PKCE verifier is derived from the session's id, never stored.
create table oidc_sign_in (
    state_hash   bytea primary key constraint oidc_sign_in_state_hash_length_check check (length(state_hash) = 32),
    session_hash bytea not null references web_session (session_hash) on delete cascade,
    nonce_hash   bytea not null constraint oidc_sign_in_nonce_hash_length_check check (length(nonce_hash) = 32),
    created_at   timestamptz not null default now(),
    expires_at   timestamptz not null
);

create index oidc_sign_in_session_idx on oidc_sign_in (session_hash);
