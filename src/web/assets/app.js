// Custodian web interface: progressive enhancement only; every page works without it.
"use strict";

// Content-Security-Policy violations are kept where a test (or a curious
// reader with the console open) can see them.
window.custodianCspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.custodianCspViolations.push(`${event.violatedDirective}: ${event.blockedURI || "inline"}`);
});

// "Copy command" buttons, shown only where the clipboard can be written.
document.addEventListener("DOMContentLoaded", () => {
  if (!navigator.clipboard) {
    return;
  }
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const source = document.getElementById(button.dataset.copy);
    if (!source) {
      continue;
    }
    button.hidden = false;
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(source.textContent.trim());
        button.textContent = "Copied";
      } catch {
        button.textContent = "Copy failed: select the text instead";
      }
    });
  }
});
