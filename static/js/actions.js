// Small page actions, delegated from the document so that fragments htmx swaps in need no set-up:
// copy buttons (`data-copy` names the element whose link or text they copy) and forms that ask
// before doing something that cannot be undone (`data-confirm` holds the question).

const COPIED_FOR_MS = 2000;

function selectContents(element) {
  const range = document.createRange();
  range.selectNodeContents(element);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

async function copy(button) {
  const source = document.querySelector(button.dataset.copy);
  if (!source) return;
  const label = button.dataset.label ?? button.textContent;
  button.dataset.label = label;
  try {
    // The link's resolved href: the address as this browser reaches the site, scheme included.
    await navigator.clipboard.writeText(source.href || source.textContent.trim());
    button.textContent = "Copied";
  } catch {
    // No clipboard (a plain-http origin other than localhost, or refused): select it to copy by hand.
    selectContents(source);
    button.textContent = "Selected: press Ctrl+C";
  }
  setTimeout(() => { button.textContent = label; }, COPIED_FOR_MS);
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (button) copy(button);
});

// Capture phase: the question comes before htmx or the browser send the form.
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
    event.stopImmediatePropagation();
  }
}, true);
