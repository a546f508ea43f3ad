// lookalike audit page: "not a problem" and "quarantine ticked" through the token API.
// Plain JavaScript, no third-party code; served from /static (the CSP forbids inline scripts).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const statusBox = $("status");
  const errorBox = $("error");
  const tokenInput = $("token");
  tokenInput.value = sessionStorage.getItem("lookalike-token") || "";

  function showError(message) {
    errorBox.textContent = message || "";
    errorBox.hidden = !message;
  }

  async function call(url, body) {
    const token = tokenInput.value.trim();
    sessionStorage.setItem("lookalike-token", token);
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + token },
      body: JSON.stringify(body),
    });
    let doc = null;
    try {
      doc = await response.json();
    } catch (e) {
      doc = null;
    }
    if (!response.ok) {
      throw new Error(doc && typeof doc.detail === "string" ? doc.detail : "the server answered " + response.status);
    }
    return doc;
  }

  for (const button of document.querySelectorAll("button.not-a-problem")) {
    button.addEventListener("click", async () => {
      showError("");
      try {
        await call("/api/audit/not-a-problem", { ids: [Number(button.dataset.id)], kind: button.dataset.kind });
        const card = button.closest(".audit-card");
        card.classList.add("dismissed");
        card.querySelector("input.tick").checked = false;
        button.disabled = true;
        statusBox.textContent = "Remembered: not a problem (" + button.dataset.kind.replace("_", " ") + ").";
      } catch (e) {
        showError(e.message);
      }
    });
  }

  $("quarantine").addEventListener("click", async () => {
    showError("");
    const ids = [...new Set([...document.querySelectorAll("input.tick:checked")].map((b) => Number(b.dataset.id)))];
    if (!ids.length) {
      showError("Nothing is ticked.");
      return;
    }
    try {
      const report = await call("/api/review/quarantine", { ids: ids, reason: "audit: reviewed in the web page" });
      statusBox.textContent =
        "Moved " + report.moved.length + ", skipped " + report.skipped.length + ". Undo with: " + report.restore;
      for (const id of ids) {
        for (const card of document.querySelectorAll('.audit-card[data-id="' + id + '"]')) card.remove();
      }
    } catch (e) {
      showError(e.message);
    }
  });
})();
