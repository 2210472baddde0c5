// Organizers: a version's page follows its build; the submission page sends its file.

document.addEventListener("DOMContentLoaded", () => {
  // While a version builds, its page reloads itself to show the state.
  const building = document.querySelector("[data-refresh]");
  if (building) {
    const seconds = Number(building.dataset.refresh) || 3;
    setTimeout(() => window.location.reload(), seconds * 1000);
  }

  const form = document.getElementById("submit-form");
  if (!form) {
    return;
  }
  const status = document.getElementById("submit-status");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = form.elements.file.files[0];
    if (!file) {
      return;
    }
    const query = new URLSearchParams({ version: form.elements.version.value });
    const description = form.elements.description.value.trim();
    if (description) {
      query.set("description", description);
    }
    status.textContent = `Sending ${file.name}…`;
    let answer;
    let body = null;
    try {
      answer = await fetch(`${form.dataset.submitUrl}?${query}`, {
        method: "POST",
        headers: {
          "X-CSRF-Token": form.dataset.csrf,
          "Content-Type": /\.zip$/i.test(file.name) ? "application/zip" : "text/csv",
        },
        body: file,
      });
      body = await answer.json().catch(() => null);
    } catch {
      status.textContent = "Not sent: the connection failed.";
      return;
    }
    if (answer.status === 202) {
      status.textContent = "Received: it is queued for scoring.";
      window.location.reload();
      return;
    }
    const problems = ((body && body.problems) || []).map((p) => (p.row ? `line ${p.row}: ${p.message}` : p.message));
    status.textContent = `Refused: ${body && body.message ? body.message : `the server answered ${answer.status}`}${problems.length ? ` (${problems.join("; ")})` : ""}`;
  });
});
