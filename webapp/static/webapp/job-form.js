// The new-job form: show the chosen kind's fields, preview labels, load and format schemas.
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

  // Labels, one per line, shown back as chips so a stray blank line or typo is easy to spot.
  const labels = form.querySelector("textarea[name=labels]");
  const preview = form.querySelector("[data-label-preview]");

  function renderLabels() {
    const names = labels.value.split("\n").map((line) => line.trim()).filter(Boolean);
    const chips = names.map((name) => {
      const chip = document.createElement("span");
      chip.className = "chip";
      chip.textContent = name;
      return chip;
    });
    if (names.length) {
      const count = document.createElement("span");
      count.className = "muted small";
      count.textContent = `${names.length} label${names.length === 1 ? "" : "s"}`;
      chips.push(count);
    }
    preview.replaceChildren(...chips);
  }

  labels.addEventListener("input", renderLabels);
  renderLabels();

  // Example schemas (and a sample text when the text box is empty), from a JSON script tag.
  const schema = form.querySelector("textarea[name=schema]");
  const text = form.querySelector("textarea[name=text]");
  const examples = JSON.parse(document.getElementById("schema-examples").textContent);

  form.addEventListener("click", (event) => {
    const button = event.target.closest("[data-schema-example]");
    if (!button) return;
    const example = examples.find((item) => item.id === button.dataset.schemaExample);
    schema.value = JSON.stringify(example.schema, null, 2);
    if (!text.value.trim()) text.value = example.text;
  });

  form.querySelector("[data-format-json]").addEventListener("click", () => {
    try {
      schema.value = JSON.stringify(JSON.parse(schema.value), null, 2);
      schema.setCustomValidity("");
    } catch (error) {
      schema.setCustomValidity(`Not valid JSON: ${error.message}`);
      schema.reportValidity();
    }
  });

  schema.addEventListener("input", () => schema.setCustomValidity(""));
})();
