// lookalike review page: list duplicate groups or a sweep, tick, quarantine through the token API.
// Plain JavaScript, no third-party code; served from /static (the CSP forbids inline scripts).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const statusBox = $("status");
  const errorBox = $("error");
  const section = $("review-section");
  const list = $("review-list");
  const title = $("review-title");
  const tokenInput = $("token");
  tokenInput.value = sessionStorage.getItem("lookalike-token") || "";

  function showError(message) {
    errorBox.textContent = message || "";
    errorBox.hidden = !message;
  }

  async function call(url, options) {
    const response = await fetch(url, options);
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (!response.ok) {
      const detail = body && typeof body.detail === "string" ? body.detail : "the server answered " + response.status;
      throw new Error(detail);
    }
    return body;
  }

  function authHeaders() {
    const token = tokenInput.value.trim();
    sessionStorage.setItem("lookalike-token", token);
    return { "Content-Type": "application/json", Authorization: "Bearer " + token };
  }

  function tile(item, ticked, note) {
    const label = document.createElement("label");
    label.className = "card review-card";
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = ticked;
    box.dataset.id = item.id;
    const img = document.createElement("img");
    img.src = item.thumbnail_url;
    img.alt = item.name;
    img.loading = "lazy";
    const caption = document.createElement("span");
    caption.className = "caption";
    caption.textContent = note + " · " + item.name;
    label.append(box, img, caption);
    return label;
  }

  function notDupButton(keep, dup, card) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "button small";
    button.textContent = "not a duplicate";
    button.addEventListener("click", async () => {
      showError("");
      try {
        await call("/api/review/not-duplicates", {
          method: "POST",
          headers: authHeaders(),
          body: JSON.stringify({ pairs: [[keep.id, dup.id]] }),
        });
        card.remove();
        statusBox.textContent = "Remembered: " + dup.name + " is not a duplicate of " + keep.name + ".";
      } catch (e) {
        showError(e.message);
      }
    });
    return button;
  }

  function renderGroups(doc) {
    title.textContent = doc.total_groups + " duplicate groups (similarity ≥ " + doc.threshold.toFixed(2) + ")";
    list.replaceChildren(
      ...doc.groups.map((g) => {
        const group = document.createElement("div");
        group.className = "grid review-group";
        group.append(tile(g.keep, false, "keep"));
        for (const d of g.duplicates) {
          const wrap = document.createElement("div");
          wrap.className = "review-item";
          wrap.append(tile(d, true, Math.round(d.score * 100) + "%"), notDupButton(g.keep, d, wrap));
          group.append(wrap);
        }
        return group;
      })
    );
    section.hidden = false;
  }

  function renderSweep(doc) {
    const rule = doc.rule && doc.rule !== "threshold" ? ", " + doc.rule : "";
    const verified = doc.verify ? doc.verify.confirmed : 0;
    title.textContent =
      doc.count + " images (similarity ≥ " + doc.threshold.toFixed(3) + rule + ")" +
      (verified ? ", " + verified + " of them copies point for point under it" : "");
    const grid = document.createElement("div");
    grid.className = "grid";
    grid.append(
      ...doc.matches.map((m) => tile(m, true, Math.round(m.score * 100) + "%" + (m.verified ? " · copy" : "")))
    );
    const parts = [grid];
    const tier = doc.next_tier;
    if (tier) {
      // where the next tier starts, and a button that sweeps down to it
      const note = document.createElement("p");
      note.className = "muted next-tier";
      note.textContent =
        "Next tier: " + (tier.more ? "at least " : "") + tier.count + " more at " + tier.lowest.toFixed(3) + "–" +
        tier.highest.toFixed(3) + (tier.label ? " (" + tier.label + ")" : "") + ". ";
      const widen = document.createElement("button");
      widen.type = "button";
      widen.className = "button small";
      widen.textContent = "Sweep down to " + tier.threshold;
      widen.addEventListener("click", () => {
        $("sweep-threshold").value = tier.threshold;
        $("sweep-form").requestSubmit();
      });
      note.append(widen);
      parts.push(note);
    }
    list.replaceChildren(...parts);
    section.hidden = false;
  }

  let reload = null; // the last listing, run again after quarantining

  async function load(message, listing) {
    statusBox.textContent = message;
    reload = listing;
    try {
      await reload();
      statusBox.textContent = "";
    } catch (e) {
      statusBox.textContent = "";
      showError(e.message);
    }
  }

  $("dups-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    showError("");
    await load("Looking for duplicates…", async () =>
      renderGroups(await call("/api/review/dups?threshold=" + $("dups-threshold").value))
    );
  });

  $("sweep-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    showError("");
    const form = new FormData();
    for (const id of $("sweep-like").value.split(/[\s,]+/).filter(Boolean)) form.append("like", id);
    for (const id of $("sweep-unlike").value.split(/[\s,]+/).filter(Boolean)) form.append("unlike", id);
    if ($("sweep-image").files.length) form.append("image", $("sweep-image").files[0]);
    form.append("threshold", $("sweep-threshold").value);
    await load("Sweeping…", async () => renderSweep(await call("/api/review/sweep", { method: "POST", body: form })));
  });

  // /review?like=1,2,3 (the audit page's "sweep this cluster"): fill in the examples and sweep at once
  const params = new URLSearchParams(window.location.search);
  const like = params.get("like");
  if (like) {
    $("sweep-like").value = like.split(",").join(" ");
    if (params.get("threshold")) $("sweep-threshold").value = params.get("threshold");
    $("sweep-form").requestSubmit();
  }

  $("quarantine").addEventListener("click", async () => {
    showError("");
    const ids = [...list.querySelectorAll("input[type=checkbox]:checked")].map((b) => Number(b.dataset.id));
    if (!ids.length) {
      showError("Nothing is ticked.");
      return;
    }
    try {
      const report = await call("/api/review/quarantine", {
        method: "POST",
        headers: authHeaders(),
        body: JSON.stringify({ ids: ids, reason: title.textContent + " — reviewed in the web page" }),
      });
      statusBox.textContent =
        "Moved " + report.moved.length + ", skipped " + report.skipped.length + ". Undo with: " + report.restore;
      if (reload) await reload();
    } catch (e) {
      showError(e.message);
    }
  });
})();
