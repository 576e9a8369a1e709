// aijobs: small behaviours for every page. No framework, no build step.
// Data never goes through innerHTML here: text is set with textContent, and live parts are
// server-rendered fragments (Django autoescapes them) parsed with DOMParser, which leaves
// any <script> in them inert. Live pages follow event streams; they poll only without one.
"use strict";

document.documentElement.classList.replace("no-js", "js");

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

// --- secrets hidden until shown: data-reveal="<selector of a password input>" ---------------------

document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-reveal]");
  if (!button) return;
  const input = document.querySelector(button.dataset.reveal);
  const show = input.type === "password";
  input.type = show ? "text" : "password";
  button.setAttribute("aria-pressed", String(show));
  const label = button.querySelector("[data-reveal-label]");
  if (label) label.textContent = show ? "Hide" : "Show";
});

document.addEventListener("focusin", (event) => {
  if (event.target.matches("[data-select-on-focus]")) event.target.select();
});

// --- live parts ----------------------------------------------------------------------------------
// An element with data-live-url and data-live-active="true" follows the event stream
// (Server-Sent Events) its data-live-events names: a job's (status, output, done), a batch's
// (status, progress, done) or the one that pulses for the user's lists (change). Every event
// but output re-fetches data-live-url, at most once per REFRESH_DELAY_MS; its answer holds
// fresh copies of the page's [data-live-part] elements (matched by id) and its own
// data-live-active, false once nothing on the page can change any more. Output events are
// shown in [data-live-output] as they come: the structured output parsed so far, written with
// textContent only. Where the stream cannot be had (no EventSource, or an answer the browser
// will not retry), the region is re-fetched every POLL_INTERVAL_MS while it is live instead;
// data-live-mode says which ("stream" or "poll").

const REFRESH_DELAY_MS = 150;
const POLL_INTERVAL_MS = 2000;
const REFRESHING_EVENTS = ["status", "progress", "change"];

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

function humanize(key) {
  const words = key.replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

// A JSON value as nested lists, every string through textContent: partial output is the
// model's text, so it must never be parsed as HTML.
function renderValue(value) {
  if (Array.isArray(value)) {
    const list = document.createElement("ul");
    for (const item of value) {
      const entry = document.createElement("li");
      entry.append(renderValue(item));
      list.append(entry);
    }
    return list;
  }
  if (value !== null && typeof value === "object") {
    const fields = document.createElement("dl");
    fields.className = "result-fields";
    for (const [key, item] of Object.entries(value)) {
      const row = document.createElement("div");
      const name = document.createElement("dt");
      name.className = "input-label";
      name.textContent = humanize(key);
      const body = document.createElement("dd");
      body.append(renderValue(item));
      row.append(name, body);
      fields.append(row);
    }
    return fields;
  }
  const text = document.createElement("span");
  text.textContent = value === null ? "" : String(value);
  return text;
}

// The output so far is kept on the region, not in the element showing it: a status event's
// refresh may replace that element with a fresh (empty) copy, which gets it back.
function addOutput(region, data) {
  const output = region.liveOutput || { text: "", partial: null };
  output.text += data.text;
  output.partial = data.partial ?? output.partial;
  region.liveOutput = output;
  showOutput(region);
}

function showOutput(region) {
  const target = region.querySelector("[data-live-output]");
  if (!target || !region.liveOutput) return;
  const { text, partial } = region.liveOutput;
  target.replaceChildren(renderValue(partial ?? text));
  target.hidden = false;
}

function follow(region) {
  let source = null;
  let polling = !window.EventSource || !region.dataset.liveEvents;
  let timer = null;
  const update = async () => {
    timer = null;
    let active = false;
    try {
      active = await refresh(region);
    } catch {
      active = true; // a network blip: the next event (or poll) tries again
    }
    region.dataset.liveActive = String(active);
    showOutput(region);
    sync();
  };
  const later = () => {
    if (timer === null) timer = window.setTimeout(update, REFRESH_DELAY_MS);
  };
  const close = () => {
    if (source) source.close();
    source = null;
  };
  const open = () => {
    const opened = new EventSource(region.dataset.liveEvents);
    for (const name of REFRESHING_EVENTS) opened.addEventListener(name, later);
    opened.addEventListener("output", (event) => addOutput(region, JSON.parse(event.data)));
    opened.addEventListener("done", () => {
      // Closed here, or EventSource would reconnect to a stream that has ended.
      close();
      later();
    });
    opened.addEventListener("error", () => {
      // A dropped connection is retried by the browser itself, with Last-Event-ID. One it
      // gave up on (an error status, not an event stream) leaves the periodic refresh.
      if (opened.readyState !== EventSource.CLOSED) return;
      close();
      polling = true;
      later();
    });
    source = opened;
  };
  const sync = () => {
    const active = region.dataset.liveActive === "true";
    if (!active && source) close();
    if (active && !polling && !source) open();
    if (active && polling && timer === null) timer = window.setTimeout(update, POLL_INTERVAL_MS);
    region.dataset.liveMode = polling ? "poll" : "stream";
    setIndicators(active);
  };
  sync();
}

document.addEventListener("DOMContentLoaded", () => {
  for (const region of document.querySelectorAll("[data-live-url]")) follow(region);
});
