// The researcher pages: progressive enhancement only.
