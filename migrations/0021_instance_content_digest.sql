-- A digest of an instance's de-identified content that does not depend on its
-- transfer syntax (src/ingest/content.rs): the same instance sent again in
-- another encoding is a duplicate, not a conflict. Null for instances stored
-- before it existed; those are compared by the sha256 of their object.
alter table instance add column content_sha256 bytea;
