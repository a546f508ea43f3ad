// lookalike search page: pick / drop / paste a picture, POST it to /api/search, show the grid.
// Plain JavaScript, no build step and no third-party code (the page must work offline).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  // The page's parts, by region: the form, the messages, the query preview, the results.
  const [form, fileInput, kInput, verifyInput] = [$("search-form"), $("file"), $("k"), $("verify")];
  const [statusBox, errorBox] = [$("status"), $("error")];
  const [queryFigure, queryImage, queryName] = [$("query"), $("query-image"), $("query-name")];
  const [section, title, grid] = [$("results-section"), $("results-title"), $("results")];
  const [noMatch, showAnyway] = [$("no-match"), $("show-anyway")];
  let current = null; // the last picture searched, so changing k re-runs it
  let previewUrl = null;

  function errorText(body, status) {
    if (body && typeof body.detail === "string") return body.detail;
    if (body && Array.isArray(body.detail)) {
      return body.detail.map((d) => (d.loc ? d.loc.slice(-1)[0] + ": " : "") + d.msg).join("; ");
    }
    return "The server answered " + status + ".";
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  function card(match) {
    const a = document.createElement("a");
    a.className = "card";
    a.href = match.page_url;
    a.dataset.id = match.id;
    const img = document.createElement("img");
    img.src = match.thumbnail_url;
    img.alt = match.path.split("/").pop();
    img.loading = "lazy";
    const caption = document.createElement("span");
    caption.className = "caption";
    caption.textContent = "similarity: " + Math.round(match.score * 100) + "%";
    if (match.label) {
      const label = document.createElement("span");
      label.className = "label label-" + String(match.label).replace(/[ _]/g, "-");
      label.textContent = String(match.label).replace(/_/g, " ");
      caption.append(" · ", label);
    }
    if (match.verified) {
      const copy = document.createElement("span");
      copy.className = "label label-copy";
      copy.textContent = "copy (point for point)";
      caption.append(" · ", copy);
    }
    a.append(img, caption);
    return a;
  }

  function render(result) {
    title.textContent = "Most similar";
    grid.replaceChildren(...result.results.map(card));
    section.hidden = false;
    if (result.no_match) {
      noMatch.hidden = false;
      grid.hidden = true;
      title.hidden = true;
    } else {
      noMatch.hidden = true;
      grid.hidden = false;
      title.hidden = false;
    }
    if (!result.results.length) {
      statusBox.textContent = "The collection is empty.";
    }
  }

  async function search(file) {
    if (!file) return;
    current = file;
    showError("");
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    queryImage.src = previewUrl;
    queryName.textContent = file.name || "pasted picture";
    queryFigure.hidden = false;
    section.hidden = true;
    statusBox.textContent = "Searching…";
    const body = new FormData();
    body.append("image", file, file.name || "pasted.png");
    body.append("k", kInput.value || "4");
    if (verifyInput.checked) body.append("verify", "true");
    let response;
    try {
      response = await fetch("/api/search", { method: "POST", body: body });
    } catch (err) {
      statusBox.textContent = "";
      showError("Could not reach the server: " + err.message);
      return;
    }
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    statusBox.textContent = "";
    if (!response.ok) {
      showError(errorText(data, response.status));
      return;
    }
    const result = data.queries[0];
    if (result.error) {
      showError(result.error);
      return;
    }
    render(result);
  }

  showAnyway.addEventListener("click", () => {
    grid.hidden = false;
    title.hidden = false;
    title.textContent = "Closest anyway (not really similar)";
  });
  fileInput.addEventListener("change", () => search(fileInput.files[0]));
  kInput.addEventListener("change", () => {
    if (current) search(current);
  });
  verifyInput.addEventListener("change", () => {
    if (current) search(current);
  });
  ["dragenter", "dragover"].forEach((type) =>
    form.addEventListener(type, (event) => {
      event.preventDefault();
      form.classList.add("dragging");
    })
  );
  ["dragleave", "drop"].forEach((type) =>
    form.addEventListener(type, () => form.classList.remove("dragging"))
  );
  form.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) search(file);
  });
  form.addEventListener("submit", (event) => event.preventDefault());
  document.addEventListener("paste", (event) => {
    const items = event.clipboardData ? Array.from(event.clipboardData.files) : [];
    const file = items.find((f) => f.type.startsWith("image/"));
    if (file) {
      event.preventDefault();
      search(file);
    }
  });
})();
