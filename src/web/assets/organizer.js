// The organizer pages: progressive enhancement only.
