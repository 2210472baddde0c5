// The admin pages: progressive enhancement only.
