-- Anonymous downloaders are counted by a keyed hash of their IP address
-- (src/release/downloaders.rs), never by the address itself. The key is
-- random, one per UTC day, made by the first download of the day (`insert …
-- on conflict do nothing`, so concurrent nodes agree on it), and deleted once
-- its day is over: from then on nobody, not even an operator holding the
-- registry key, can link a hash back to an address (the 2^32 IPv4 addresses
-- are too few to hide behind anything derivable).
create table download_key (
    day        date primary key,
    key        bytea not null constraint download_key_length_check check (length(key) = 32),
    created_at timestamptz not null default now()
);
