// The researcher pages: progressive enhancement only.

// The discovery builder answers only when sent (each answer spends budget):
// once a criterion changes, the answer on screen is marked as the old one.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("discover-form");
  const note = document.getElementById("stale-note");
  if (!form || !note || !document.getElementById("counts")) {
    return;
  }
  const stale = () => {
    note.hidden = false;
  };
  form.addEventListener("change", stale);
  form.addEventListener("input", stale);
});
// End of the researcher pages' own script.
