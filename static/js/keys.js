// Keyboard shortcuts of the room page: Ctrl+Enter (Cmd+Enter on a Mac) in the prompt's form runs it,
// Escape stops the run in progress. Delegated from the document and keyed only on the stable hooks
// (data-testid prompt / run / cancel), so they hold whatever markup surrounds those hooks and on
// every page htmx swaps in. The buttons do the work: a shortcut is a click on one.

const hook = (name) => document.querySelector(`[data-testid="${name}"]`);
const MAC = /Mac|iPhone|iPad/.test(navigator.platform);

/** Whether `target` is the prompt or a field of the form that the run button submits. */
function inPromptForm(target, run) {
  if (target === hook("prompt")) return true;
  const form = run.form ?? run.closest("form");
  return Boolean(form && form.contains(target));
}

document.addEventListener("keydown", (event) => {
  if (event.defaultPrevented || event.isComposing) return;
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !event.altKey && !event.shiftKey) {
    const run = hook("run");
    if (!run || !inPromptForm(event.target, run)) return;
    event.preventDefault(); // no newline in the prompt
    if (!run.disabled) run.click();
  } else if (event.key === "Escape") {
    const cancel = hook("cancel");
    if (!cancel || cancel.disabled) return;
    event.preventDefault();
    cancel.click();
  }
});

/** Name the shortcuts on the buttons (screen readers read aria-keyshortcuts; a pointer sees the title). */
function label() {
  const run = hook("run");
  const cancel = hook("cancel");
  if (run) {
    run.setAttribute("aria-keyshortcuts", MAC ? "Meta+Enter" : "Control+Enter");
    run.title = MAC ? "Run (⌘ Enter)" : "Run (Ctrl+Enter)";
  }
  if (cancel) {
    cancel.setAttribute("aria-keyshortcuts", "Escape");
    cancel.title = "Stop (Esc)";
  }
}

document.addEventListener("htmx:after:swap", label);
label();
