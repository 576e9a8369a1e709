// aijobs: small behaviours for every page. No framework, no build step.
// Data never goes through innerHTML here: text is set with textContent, and live parts are
// server-rendered fragments (Django autoescapes them) parsed with DOMParser, which leaves
// any <script> in them inert.
"use strict";

document.documentElement.classList.replace("no-js", "js");

const LIVE_INTERVAL_MS = 2000;

// --- navigation menu on narrow screens ---------------------------------------------------------

document.addEventListener("click", (event) => {
  const toggle = event.target.closest("[data-nav-toggle]");
  if (!toggle) return;
  const open = toggle.getAttribute("aria-expanded") !== "true";
  toggle.setAttribute("aria-expanded", String(open));
  toggle.closest(".sidebar").classList.toggle("is-open", open);
});

// --- forms: confirm, submit once, auto-submitting filters ----------------------------------------

document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
    return;
  }
  if (form.method.toLowerCase() === "post") {
    // A second click cannot send a second request; the form's idempotency key (where it has
    // one) covers what gets past this, such as a resent request.
    for (const button of form.querySelectorAll("button[type=submit]")) {
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      // The label is the button's last text, after any icon.
      const label = button.lastChild;
      if (button.dataset.busyLabel && label.nodeType === Node.TEXT_NODE) {
        label.textContent = button.dataset.busyLabel;
      }
    }
  }
});

// Coming back through the history shows the page as it was left: with its buttons disabled.
window.addEventListener("pageshow", (event) => {
  if (!event.persisted) return;
  for (const button of document.querySelectorAll("button[aria-busy=true]")) {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
});

document.addEventListener("change", (event) => {
  const form = event.target.closest("form[data-autosubmit]");
  if (form) form.requestSubmit();
});

// --- copy buttons: data-copy="<selector of an input, a JSON script or any element>" --------------

function copyText(target) {
  if (target.matches("input, textarea")) return target.value;
  if (target.type === "application/json") {
    return JSON.stringify(JSON.parse(target.textContent), null, 2);
  }
  return target.textContent;
}

async function writeClipboard(text, source) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  // Plain http on a non-local host has no clipboard API: fall back to selecting the text.
  if (source.select) {
    source.select();
    document.execCommand("copy");
  }
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const target = document.querySelector(button.dataset.copy);
  const label = button.querySelector("[data-copy-label]");
  try {
    await writeClipboard(copyText(target), target);
    if (label) label.textContent = "Copied";
  } catch {
    if (label) label.textContent = "Press Ctrl+C";
    if (target.select) target.select();
  }
});

document.addEventListener("focusin", (event) => {
  if (event.target.matches("[data-select-on-focus]")) event.target.select();
});

// --- live parts ----------------------------------------------------------------------------------
// An element with data-live-url and data-live-active="true" re-fetches that URL every 2 s. The
// answer holds fresh copies of the page's [data-live-part] elements (matched by id) and its own
// data-live-active, which turns false once nothing on the page can change any more.

function setIndicators(active) {
  for (const pill of document.querySelectorAll("[data-live-indicator]")) pill.hidden = !active;
}

function swapParts(fresh) {
  for (const part of fresh.querySelectorAll("[data-live-part][id]")) {
    const current = document.getElementById(part.id);
    if (current && current.outerHTML !== part.outerHTML) {
      current.replaceWith(document.adoptNode(part));
    }
  }
}

async function refresh(region) {
  const response = await fetch(region.dataset.liveUrl, {
    headers: { Accept: "text/html" },
    cache: "no-store",
    credentials: "same-origin",
  });
  // A redirect to the login page (session ended) has no live flag: stop quietly.
  const html = response.ok && !response.redirected ? await response.text() : "";
  const fresh = new DOMParser().parseFromString(html, "text/html");
  const flag = fresh.querySelector("[data-live-active]");
  swapParts(fresh);
  return flag !== null && flag.dataset.liveActive === "true";
}

function watch(region) {
  let active = region.dataset.liveActive === "true";
  setIndicators(active);
  const tick = async () => {
    if (!document.hidden) {
      try {
        active = await refresh(region);
      } catch {
        // A network blip: keep polling, the next tick will catch up.
      }
      region.dataset.liveActive = String(active);
      setIndicators(active);
    }
    if (active) window.setTimeout(tick, LIVE_INTERVAL_MS);
  };
  if (active) window.setTimeout(tick, LIVE_INTERVAL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  for (const region of document.querySelectorAll("[data-live-url]")) watch(region);
});
