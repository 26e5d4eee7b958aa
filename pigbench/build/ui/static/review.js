// Review page: save a keep/drop decision (with its reason) for one set as soon as a button is pressed.
"use strict";

function updateSummary() {
  document.getElementById("n-keep").textContent = document.querySelectorAll(".set.keep").length;
  document.getElementById("n-drop").textContent = document.querySelectorAll(".set.drop").length;
}

async function decide(section, decision) {
  const status = section.querySelector(".status");
  const reason = section.querySelector(".reason").value;
  status.textContent = "Saving…";
  status.classList.remove("error");
  const response = await fetch("/api/decisions", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ set_id: section.dataset.setId, decision: decision, reason: reason }),
  });
  const body = await response.json();
  if (!response.ok) {
    status.textContent = body.error;
    status.classList.add("error");
    return;
  }
  section.classList.remove("keep", "drop");
  section.classList.add(body.decision);
  status.textContent = "Saved: " + body.decision;
  updateSummary();
}

document.querySelectorAll(".set").forEach((section) => {
  section.querySelectorAll("button[data-decision]").forEach((button) => {
    button.addEventListener("click", () => decide(section, button.dataset.decision));
  });
});
