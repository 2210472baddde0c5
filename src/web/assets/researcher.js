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
/* applications, grants, releases */
// The application form's live feasibility and consent check: as the form
// changes, its fields go to the page route that checks them (the same check
// as the API's) and the fragment it answers replaces the result panel. The
// form's Check button does the same without a script.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.querySelector("form[data-live-check]");
  const target = document.getElementById("check-result");
  if (!form || !target) {
    return;
  }
  let timer = null;
  let latest = 0;
  const check = async () => {
    const mine = ++latest;
    const body = new URLSearchParams(new FormData(form));
    target.setAttribute("aria-busy", "true");
    try {
      const response = await fetch(form.dataset.liveCheck, {
        method: "POST",
        body,
        credentials: "same-origin",
        headers: { "X-CSRF-Token": body.get("csrf_token") || "" },
      });
      const html = await response.text();
      if (mine === latest) {
        target.innerHTML = response.ok ? html : "<p class=\"notice notice-problem\">The check could not be run; use the Check button.</p>";
      }
    } catch {
      if (mine === latest) {
        target.textContent = "The check could not be run; use the Check button.";
      }
    } finally {
      if (mine === latest) {
        target.removeAttribute("aria-busy");
      }
    }
  };
  form.addEventListener("change", () => {
    clearTimeout(timer);
    timer = setTimeout(check, 300);
  });
});
