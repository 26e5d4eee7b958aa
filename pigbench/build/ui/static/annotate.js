// Ranking page: place the four images into rank tiers by drag-and-drop or keys 1-4 (ties allowed), then submit.
// The server validates the ranking; this script only builds it. Ranks are "1224" competition ranks:
// an image's rank is one plus the number of images placed in better tiers.
"use strict";

const task = JSON.parse(document.getElementById("task").dataset.task);
const cards = Array.from(document.querySelectorAll(".card"));
const placement = cards.map(() => 0); // slot -> tier (0 = not placed)
const submitButton = document.getElementById("submit");
const message = document.getElementById("message");

// elapsed_ms runs from the set's first display in this tab, not from the last page load: the start is
// kept in sessionStorage (one tab's storage) under the set id, so a reload mid-set does not restart it,
// and removed once the set is saved. A kept start in the future (the clock was set back) or older than
// MAX_KEPT_START_MS (a set left for another day) is replaced by this load's time.
const MAX_KEPT_START_MS = 24 * 60 * 60 * 1000;
const startKey = `pigbench.annotate.started.${task.set_id}`;

function startOfSet() {
  const now = Date.now();
  try {
    const kept = Number(window.sessionStorage.getItem(startKey));
    if (kept > 0 && kept <= now && now - kept <= MAX_KEPT_START_MS) return kept;
    window.sessionStorage.setItem(startKey, String(now));
  } catch (error) {
    // storage disabled (privacy settings): the time then runs from this page load only
  }
  return now;
}

function forgetStart() {
  try {
    window.sessionStorage.removeItem(startKey);
  } catch (error) {
    // storage disabled: nothing was kept
  }
}

const started = startOfSet();

function ranks() {
  return placement.map((tier) => 1 + placement.filter((other) => other > 0 && other < tier).length);
}

function render() {
  const complete = placement.every((tier) => tier > 0);
  const current = ranks();
  cards.forEach((card, slot) => {
    const zone = document.querySelector(`.zone[data-rank="${placement[slot]}"]`);
    if (card.parentElement !== zone) zone.appendChild(card);
    card.querySelector(".rank").textContent = placement[slot] ? String(current[slot]) : "";
    // the card's aria-label replaces its content for screen readers, so it says the rank too
    const name = `image ${card.querySelector("figcaption").textContent}`;
    card.setAttribute("aria-label", placement[slot] ? `${name}, rank ${current[slot]}` : `${name}, not ranked`);
  });
  submitButton.disabled = !complete;
}

function place(slot, tier) {
  placement[slot] = tier;
  message.textContent = "";
  message.classList.remove("error");
  render();
  cards[slot].focus();
}

async function submit() {
  if (submitButton.disabled) return;
  submitButton.disabled = true;
  message.textContent = "Saving…";
  message.classList.remove("error");
  let response, body;
  try {
    response = await fetch("/api/rankings", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ set_id: task.set_id, ranks: ranks(), elapsed_ms: Date.now() - started }),
    });
    body = await response.json().catch(() => ({ error: `the server answered ${response.status}` }));
  } catch (error) {
    body = { error: "the server could not be reached" };
  }
  // saved, saved before (409), or the set was withdrawn from the study meanwhile (410): on to the next set
  if (response && (response.ok || response.status === 409 || response.status === 410)) {
    forgetStart();
    window.location.assign("/task");
    return;
  }
  // not saved: the ranking stays on screen so that the annotator can submit it again
  message.textContent = `Not saved: ${body.error}. Your ranking is still here; try Submit again.`;
  message.classList.add("error");
  submitButton.disabled = false;
}

cards.forEach((card, slot) => {
  card.addEventListener("click", (event) => {
    event.stopPropagation(); // a tap on a card selects it; a tap on a rank row (below) places the selected card
    card.focus();
  });
  card.addEventListener("dragstart", (event) => {
    event.dataTransfer.setData("text/plain", String(slot));
    event.dataTransfer.effectAllowed = "move";
  });
});

document.querySelectorAll(".zone").forEach((zone) => {
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const slot = Number(event.dataTransfer.getData("text/plain"));
    if (Number.isInteger(slot) && slot >= 0 && slot < cards.length) place(slot, Number(zone.dataset.rank));
  });
});

// touch screens without drag-and-drop or keys: tap an image, then tap a rank row (or the image area to take it back);
// the tap on the row takes the focus from the image, so the last image tapped or focused is kept in `selected`
let selected = null;
cards.forEach((card, slot) => card.addEventListener("focus", () => { selected = slot; }));
document.querySelectorAll(".zone").forEach((zone) => {
  zone.addEventListener("click", () => {
    if (selected !== null) place(selected, Number(zone.dataset.rank));
  });
});

document.addEventListener("keydown", (event) => {
  if (event.target.closest && event.target.closest("form")) return;
  const card = document.activeElement && document.activeElement.closest(".card");
  if (event.key === "Enter" && !submitButton.disabled && event.target !== submitButton) {
    event.preventDefault();
    submit();
    return;
  }
  if (!card) return;
  const slot = Number(card.dataset.slot);
  if (/^[1-4]$/.test(event.key)) {
    place(slot, Number(event.key));
  } else if (event.key === "0" || event.key === "Backspace") {
    place(slot, 0);
  } else if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
    const step = event.key === "ArrowRight" ? 1 : cards.length - 1;
    cards[(slot + step) % cards.length].focus();
  } else {
    return;
  }
  event.preventDefault();
});

submitButton.addEventListener("click", submit);
render();

document.body.dataset.ready = "true"; // handlers are attached: tests wait for this before typing
