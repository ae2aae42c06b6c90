/* The room page's conversation as chat bubbles (conversation.js holds it): each turn a `message`
 * with its role; an answer streams as plain text in the page's `output` element, which moves into
 * the latest answer's bubble, and is shown as the server's rendered Markdown once stored. The HTML
 * comes only from the server's renderer (docs/conversations.md), which lets no raw HTML through. */

const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};

function button(label, testid, onClick) {
  const b = el("button", { type: "button", className: "small", textContent: label });
  if (testid) b.dataset.testid = testid;
  b.addEventListener("click", onClick);
  return b;
}

/** What an answer's meta line says: model, where it ran, first token, speed, its job. */
function meta(turn) {
  const line = el("p", { className: "turn-meta small muted" });
  const parts = [turn.model];
  if (turn.run?.running) parts.push("answering…");
  else {
    if (turn.ran_on) parts.push(turn.ran_on);
    if (typeof turn.ttft_ms === "number") parts.push(`first token ${turn.ttft_ms.toFixed(0)} ms`);
    if (typeof turn.tok_s === "number") parts.push(`${turn.tok_s.toFixed(1)} tok/s`);
    else if (typeof turn.ttft_ms === "number") parts.push("too short to measure a speed");
  }
  line.append(parts.filter(Boolean).join(" · "));
  if (turn.job) {
    const link = el("a", { href: `/jobs/${turn.job}`, textContent: "job" });
    link.dataset.jobId = turn.job;
    line.append(" · ", link);
    window.htmx?.process(link);
  }
  return line;
}

function trimmedNote(turn) {
  const n = turn.trimmed;
  return el("p", {
    className: "turn-trimmed small",
    textContent: `${n} earlier turn${n === 1 ? " was" : "s were"} left out: the conversation no longer fits this model's context.`,
  });
}

/** Render `conversation` into the page's #turns; `actions` = {regenerate(), edit(index, text), copied(text)}. */
export function renderConversation(ui, conversation, actions) {
  const { turns: list, output } = ui;
  const items = [];
  if (conversation.system.trim() && conversation.turns.length) {
    const system = el("li", { className: "turn turn-system" }, el("p", { className: "turn-label small muted", textContent: "System prompt" }), el("div", { className: "turn-body", textContent: conversation.system }));
    system.dataset.testid = "message";
    system.dataset.role = "system";
    items.push(system);
  }
  const lastAnswer = conversation.turns.findLastIndex((t) => t.role === "assistant");
  conversation.turns.forEach((turn, index) => {
    const item = el("li", { className: `turn turn-${turn.role}` });
    item.dataset.testid = "message";
    item.dataset.role = turn.role;
    if (turn.job) item.dataset.jobId = turn.job;
    if (turn.role === "user") {
      item.append(el("div", { className: "turn-body", textContent: turn.content }));
      if (!turn.pending) item.append(el("div", { className: "turn-actions" }, button("Edit", "", () => editInPlace(item, turn, index, actions, conversation))));
    } else {
      if (turn.trimmed) item.append(trimmedNote(turn));
      const rendered = typeof turn.html === "string" && !turn.run?.running;
      if (rendered) item.append(el("div", { className: "turn-body markdown", innerHTML: turn.html }));
      if (index === lastAnswer) {
        // The page's live `output` (the raw text) lives in the latest answer; once it is rendered, hidden.
        output.hidden = rendered;
        item.append(output);
      } else if (!rendered) {
        item.append(el("pre", { className: "turn-body raw", textContent: turn.content }));
      }
      item.append(meta(turn));
      if (!turn.run?.running && turn.content) {
        const row = el("div", { className: "turn-actions" }, button("Copy", "copy", (e) => actions.copied(turn.content, e.currentTarget)));
        if (index === conversation.turns.length - 1) row.append(button("Regenerate", "regenerate", () => actions.regenerate()));
        item.append(row);
      }
    }
    items.push(item);
  });
  if (lastAnswer < 0) {
    output.hidden = false;
    ui.outputPane.append(output);
  }
  list.replaceChildren(...items);
  ui.title.textContent = conversation.title || "New conversation";
  const buttons = list.querySelectorAll("button");
  for (const b of buttons) b.disabled = conversation.busy;
  list.lastElementChild?.scrollIntoView({ block: "nearest" });
}

/** Turn a question's bubble into a field to change it and send it again. */
function editInPlace(item, turn, index, actions, conversation) {
  if (conversation.busy) return;
  const field = el("textarea", { value: turn.content, rows: 3, maxLength: 8000 });
  field.setAttribute("aria-label", "Edit this prompt");
  const send = button("Send", "", () => field.value.trim() && actions.edit(index, field.value.trim()));
  send.classList.add("primary");
  const cancel = button("Cancel", "", () => actions.rerender());
  item.replaceChildren(field, el("div", { className: "turn-actions" }, cancel, send));
  field.focus();
}
