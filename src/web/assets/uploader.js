// The uploader pages: progressive enhancement only.
