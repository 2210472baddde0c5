// The steward pages: progressive enhancement only.

// Deleting a quarantined instance cannot be undone: ask once more.
document.addEventListener("submit", (event) => {
  const button = event.submitter;
  if (button && button.classList.contains("danger") && !window.confirm("Delete this instance and its file for good?")) {
    event.preventDefault();
  }
});
