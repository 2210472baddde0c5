// The steward pages: progressive enhancement only.
