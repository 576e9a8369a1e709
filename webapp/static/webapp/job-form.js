// The new-job form: show the chosen kind's fields, preview one-per-line lists, fill in a kind's
// examples, format JSON. Nothing here names a kind: the page marks what each field needs.
"use strict";

(() => {
  const form = document.querySelector("[data-job-form]");
  if (!form) return;

  // Only the chosen kind's fields are shown; the others stay in the form (and keep what was
  // typed into them) but the server reads only the chosen kind's.
  function showKind(kind) {
    for (const group of form.querySelectorAll(".kind-fields")) {
      group.hidden = group.dataset.kind !== kind;
    }
  }

  form.addEventListener("change", (event) => {
    if (event.target.name === "kind") showKind(event.target.value);
  });

  // A one-per-line list, shown back as chips so a stray blank line or typo is easy to spot.
  function renderLines(textarea) {
    const preview = form.querySelector(`[data-lines-preview="${textarea.name}"]`);
    if (!preview) return;
    const items = textarea.value.split("\n").map((line) => line.trim()).filter(Boolean);
    const chips = items.map((item) => {
      const chip = document.createElement("span");
      chip.className = "chip";
      chip.textContent = item;
      return chip;
    });
    if (items.length) {
      const count = document.createElement("span");
      count.className = "muted small";
      count.textContent = `${items.length} item${items.length === 1 ? "" : "s"}`;
      chips.push(count);
    }
    preview.replaceChildren(...chips);
  }

  const lineFields = form.querySelectorAll("textarea[data-lines]");
  for (const textarea of lineFields) {
    textarea.addEventListener("input", () => renderLines(textarea));
    renderLines(textarea);
  }

  // Examples fill in every field of their kind, and the text unless the user wrote their own.
  const examples = JSON.parse(document.getElementById("kind-examples").textContent);
  const exampleTexts = new Set(
    Object.values(examples).flatMap((list) => list.map((example) => example.values.text)),
  );

  function setField(name, value) {
    for (const input of form.querySelectorAll(`[name="${name}"]`)) {
      if (input.type === "checkbox") input.checked = Boolean(value);
      else if (input.type === "radio") input.checked = input.value === String(value);
      else input.value = value;
      if (input.matches("textarea[data-lines]")) renderLines(input);
    }
  }

  form.addEventListener("click", (event) => {
    const button = event.target.closest("[data-example]");
    if (!button) return;
    const example = examples[button.dataset.example][Number(button.dataset.exampleIndex)];
    for (const [name, value] of Object.entries(example.values)) {
      const text = form.elements.text;
      if (name === "text" && text.value.trim() && !exampleTexts.has(text.value)) continue;
      setField(name, value);
    }
  });

  form.addEventListener("click", (event) => {
    const button = event.target.closest("[data-format-json]");
    if (!button) return;
    const textarea = form.elements[button.dataset.formatJson];
    try {
      textarea.value = JSON.stringify(JSON.parse(textarea.value), null, 2);
      textarea.setCustomValidity("");
    } catch (error) {
      textarea.setCustomValidity(`Not valid JSON: ${error.message}`);
      textarea.reportValidity();
    }
  });

  form.addEventListener("input", (event) => {
    if (event.target.matches("textarea[data-json]")) event.target.setCustomValidity("");
  });
})();
