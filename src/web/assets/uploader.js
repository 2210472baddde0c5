// Uploads: drag-and-drop of files and whole folders, each file sent on its
// own with its progress and its result; table imports with their problems.

// The words for a file's outcome, as the session's report says them.
const UPLOAD_OUTCOMES = {
  stored: "accepted, de-identified",
  duplicate: "accepted, already stored",
  quarantined: "quarantined for review",
  rejected: "rejected",
};

// A dropped entry (a file, or a folder walked to its last file), as
// `DataTransferItem.webkitGetAsEntry()` gives them, into files with their paths.
async function uploadEntryFiles(entry, path) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    return [{ file, path: path + entry.name }];
  }
  if (!entry.isDirectory) {
    return [];
  }
  const reader = entry.createReader();
  const found = [];
  // A folder's entries come in batches until an empty one.
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (batch.length === 0) {
      break;
    }
    for (const child of batch) {
      found.push(...(await uploadEntryFiles(child, `${path}${entry.name}/`)));
    }
  }
  return found;
}

// What a drop holds. The entries must be taken while the drop event runs.
function uploadDropped(dataTransfer) {
  const entries = Array.from(dataTransfer.items || [])
    .map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null))
    .filter(Boolean);
  const files = Array.from(dataTransfer.files || []);
  return async () => {
    if (entries.length > 0) {
      const found = [];
      for (const entry of entries) {
        found.push(...(await uploadEntryFiles(entry, "")));
      }
      return found;
    }
    return files.map((file) => ({ file, path: file.webkitRelativePath || file.name }));
  };
}

function uploadCell(row, text) {
  const cell = document.createElement("td");
  cell.textContent = text;
  row.appendChild(cell);
  return cell;
}

// The result of one request in words: each file's outcome and reason.
function uploadResultText(status, body) {
  if (status === 200 && body && Array.isArray(body.files)) {
    return body.files
      .map((f) => {
        const words = UPLOAD_OUTCOMES[f.outcome] || f.outcome;
        const why = f.message ? `: ${f.message}${f.code ? ` (${f.code})` : ""}` : f.code ? ` (${f.code})` : "";
        return words + why;
      })
      .join("; ");
  }
  const message = body && body.message ? body.message : `the server answered ${status}`;
  return `refused: ${message}`;
}

function uploadOne(zone, item, tbody, tally) {
  const row = document.createElement("tr");
  const name = document.createElement("th");
  name.scope = "row";
  name.textContent = item.path;
  row.appendChild(name);
  const sent = uploadCell(row, "");
  const bar = document.createElement("progress");
  bar.max = 100;
  bar.value = 0;
  bar.setAttribute("aria-label", `Sent of ${item.path}`);
  const percent = document.createElement("span");
  percent.textContent = " waiting";
  sent.append(bar, percent);
  const result = uploadCell(row, "waiting");
  result.className = "upload-result";
  tbody.appendChild(row);
  return () =>
    new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", zone.dataset.uploadUrl);
      xhr.setRequestHeader("X-CSRF-Token", zone.dataset.csrf);
      xhr.setRequestHeader("Content-Type", /\.zip$/i.test(item.path) ? "application/zip" : "application/dicom");
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) {
          bar.value = Math.round((100 * event.loaded) / event.total);
          percent.textContent = ` ${bar.value}%`;
        }
      });
      result.textContent = "sending";
      xhr.addEventListener("load", () => {
        let body = null;
        try {
          body = JSON.parse(xhr.responseText);
        } catch {
          body = null;
        }
        bar.value = 100;
        percent.textContent = " 100%";
        result.textContent = uploadResultText(xhr.status, body);
        for (const f of (body && body.files) || []) {
          tally[f.outcome] = (tally[f.outcome] || 0) + 1;
          row.classList.add(`outcome-${f.outcome}`);
        }
        if (xhr.status !== 200) {
          tally.refused = (tally.refused || 0) + 1;
          row.classList.add("outcome-rejected");
        }
        resolve();
      });
      xhr.addEventListener("error", () => {
        result.textContent = "not sent: the connection failed";
        tally.refused = (tally.refused || 0) + 1;
        resolve();
      });
      xhr.send(item.file);
    });
}

async function uploadAll(zone, items) {
  const table = document.getElementById("progress");
  const tbody = table.querySelector("tbody");
  const summary = document.getElementById("progress-summary");
  table.hidden = false;
  table.dataset.done = "false";
  const tally = {};
  const sends = items.map((item) => uploadOne(zone, item, tbody, tally));
  summary.textContent = `(${items.length} file(s) queued)`;
  // One at a time: each file's progress is its own, and the server de-identifies in order.
  for (const send of sends) {
    await send();
  }
  const parts = Object.entries(UPLOAD_OUTCOMES)
    .filter(([key]) => tally[key])
    .map(([key, words]) => `${tally[key]} ${words}`);
  if (tally.refused) {
    parts.push(`${tally.refused} refused`);
  }
  summary.textContent = `(all sent: ${parts.join(", ") || "nothing"}; reload to see the session's report)`;
  table.dataset.done = "true";
}

function setUpDropzone(zone) {
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const collect = uploadDropped(event.dataTransfer);
    collect().then((items) => uploadAll(zone, items));
  });
  for (const input of zone.querySelectorAll("input[type=file]")) {
    input.addEventListener("change", () => {
      const items = Array.from(input.files).map((file) => ({ file, path: file.webkitRelativePath || file.name }));
      input.value = "";
      uploadAll(zone, items);
    });
  }
}

// ------------------------------------------------------------------ table imports

function importContentType(name) {
  if (/\.json$/i.test(name)) return "application/json";
  if (/\.vcf$/i.test(name)) return "text/vcf";
  if (/\.gz$/i.test(name)) return "application/gzip";
  if (/\.tsv$/i.test(name)) return "text/tab-separated-values";
  return "text/csv";
}

function setUpImport(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = form.querySelector("input[type=file]").files[0];
    const section = document.getElementById("import-result");
    const outcome = document.getElementById("import-outcome");
    const problems = document.getElementById("import-problems");
    const tbody = problems.querySelector("tbody");
    if (!file) {
      return;
    }
    const query = new URLSearchParams();
    for (const name of ["cohort", "site", "issuer_of_patient_id"]) {
      const value = form.elements[name].value.trim();
      if (value) {
        query.set(name, value);
      }
    }
    section.hidden = false;
    problems.hidden = true;
    tbody.replaceChildren();
    outcome.textContent = `Checking ${file.name}…`;
    let status = 0;
    let body = null;
    try {
      const answer = await fetch(`${form.dataset.importUrl}${form.elements.kind.value}?${query}`, {
        method: "POST",
        headers: { "X-CSRF-Token": form.dataset.csrf, "Content-Type": importContentType(file.name) },
        body: file,
      });
      status = answer.status;
      body = await answer.json().catch(() => null);
    } catch {
      outcome.textContent = "Not sent: the connection failed.";
      return;
    }
    if (status === 201 && body) {
      outcome.textContent = `Imported: ${body.rows} row(s); ${body.subjects_created} new subject(s), ${body.subjects_matched} matched; ${body.values} value(s) written.`;
      return;
    }
    outcome.textContent = `Refused: ${body && body.message ? body.message : `the server answered ${status}`}`;
    for (const p of (body && body.problems) || []) {
      const row = document.createElement("tr");
      const line = document.createElement("th");
      line.scope = "row";
      line.textContent = p.row == null ? "whole file" : String(p.row);
      row.appendChild(line);
      for (const text of [p.column || "", p.message, p.code]) {
        uploadCell(row, text);
      }
      tbody.appendChild(row);
    }
    problems.hidden = tbody.children.length === 0;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const zone = document.getElementById("dropzone");
  if (zone) {
    setUpDropzone(zone);
  }
  const form = document.getElementById("import-form");
  if (form) {
    setUpImport(form);
  }
});
