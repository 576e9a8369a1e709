// The new-batch form: offer the chosen file's columns, and preview its first rows as the server
// checks them. Every rule about items is the server's: this script only reads the file's first
// line for its column names, sends the start of the file (whole rows, at most
// data-preview-bytes) with the form to data-preview-url, and swaps in the fragment that comes
// back with app.js's swapParts. job-form.js shows the chosen kind's parameters, as on the job form.
"use strict";

(() => {
  const form = document.querySelector("[data-batch-form]");
  if (!form) return;

  const NEWLINE = 0x0a;
  const QUOTE = 0x22;
  const PREVIEW_DELAY_MS = 400;
  const ID_COLUMNS = ["custom_id", "id"];
  const fileInput = form.elements.file;
  const textColumn = form.elements.text_column;
  const idColumn = form.elements.id_column;
  let sample = null; // {blob, size, name} of the chosen file's start
  let sent = 0; // the number of the latest preview asked for; older answers are dropped
  let timer = null;

  const isJsonl = (name) => /\.(jsonl|ndjson)$/i.test(name);

  // Whole rows only: up to the last newline outside quotes. In CSV a quote inside a field is
  // doubled, so a newline ends a row exactly when the quotes before it are even in number.
  // Both bytes are ASCII, so they never occur inside a multi-byte UTF-8 character.
  function wholeRows(bytes, csv) {
    let end = 0;
    let quotes = 0;
    for (let i = 0; i < bytes.length; i += 1) {
      if (bytes[i] === QUOTE) quotes += 1;
      else if (bytes[i] === NEWLINE && (!csv || quotes % 2 === 0)) end = i + 1;
    }
    return bytes.subarray(0, end);
  }

  // The column names in a CSV header line (quoted names may hold commas and quotes).
  function csvHeader(line) {
    const names = [];
    let name = "";
    let quoted = false;
    for (let i = 0; i < line.length; i += 1) {
      const char = line[i];
      if (quoted && char === '"' && line[i + 1] === '"') {
        name += '"';
        i += 1;
      } else if (char === '"') {
        quoted = !quoted;
      } else if (char === "," && !quoted) {
        names.push(name);
        name = "";
      } else {
        name += char;
      }
    }
    return [...names, name];
  }

  function columnsOf(bytes, jsonl) {
    const text = new TextDecoder().decode(bytes).replace(/^\uFEFF/, "");
    const first = text.split(/\r?\n/, 1)[0];
    if (!jsonl) return csvHeader(first);
    // A line like the API's items ({custom_id, input}) names its own text: no columns to pick.
    try {
      const record = JSON.parse(first);
      const flat = record && typeof record === "object" && !Array.isArray(record);
      return flat && !("input" in record) ? Object.keys(record) : [];
    } catch {
      return [];
    }
  }

  function option(value, label) {
    const element = document.createElement("option");
    element.value = value;
    element.textContent = label;
    return element;
  }

  // Keep the column chosen before when the new file has it; else the usual names, else
  // `fallback` (a blank option's value, or a column).
  function offer(select, columns, preferred, fallback, blank) {
    const current = select.value;
    const options = columns.map((name) => option(name, name));
    if (blank) options.unshift(option("", blank.textContent));
    select.replaceChildren(...options);
    const choice = [current, ...preferred].find((name) => name && columns.includes(name));
    select.value = choice ?? fallback;
  }

  async function readSample(file) {
    const bytes = new Uint8Array(await file.slice(0, Number(form.dataset.previewBytes)).arrayBuffer());
    const jsonl = isJsonl(file.name);
    const start = file.size > bytes.length ? wholeRows(bytes, !jsonl) : bytes;
    const columns = columnsOf(bytes, jsonl);
    if (columns.length) {
      const blank = idColumn.querySelector('option[value=""]');
      offer(idColumn, columns, ID_COLUMNS, "", blank);
      const firstText = columns.find((name) => name !== idColumn.value) ?? columns[0];
      offer(textColumn, columns, ["text"], firstText, null);
    }
    sample = { blob: new Blob([start]), size: file.size, name: file.name };
  }

  async function preview() {
    if (!sample) return;
    const number = (sent += 1);
    const data = new FormData(form);
    data.set("file", sample.blob, sample.name);
    data.set("file_size", String(sample.size));
    let html = "";
    try {
      const response = await fetch(form.dataset.previewUrl, {
        method: "POST",
        body: data,
        headers: { Accept: "text/html" },
        credentials: "same-origin",
      });
      html = response.ok && !response.redirected ? await response.text() : "";
    } catch {
      return; // A network blip: the next change asks again.
    }
    if (number !== sent || !html) return;
    swapParts(new DOMParser().parseFromString(html, "text/html"));
  }

  function previewSoon() {
    window.clearTimeout(timer);
    timer = window.setTimeout(preview, PREVIEW_DELAY_MS);
  }

  fileInput.addEventListener("change", async () => {
    const [file] = fileInput.files;
    sample = null;
    if (!file) return;
    await readSample(file);
    preview();
  });

  form.addEventListener("change", (event) => {
    if (event.target !== fileInput) previewSoon();
  });
  form.addEventListener("input", (event) => {
    if (event.target.matches("input[type=text], input[type=number], textarea")) previewSoon();
  });
  // Example buttons fill the parameters without input events.
  form.addEventListener("click", (event) => {
    if (event.target.closest("[data-example]")) previewSoon();
  });
})();
