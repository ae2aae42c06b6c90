/* A conversation of the room page (docs/conversations.md): its system prompt and turns, stored
 * through /api/conversations, and each answer run as a job of the conversation's messages, without
 * the oldest turns when they no longer fit the model's context (the inference worker's "template"),
 * recorded with the prompt they make: the model's chat template, or the plain "role: content" text.
 * It belongs to the peer session, like the run answering it: the page can be swapped out mid-answer.
 *
 * Events (CustomEvent): change (turns, title or id changed; re-render), stored (the server's copy
 * changed, a turn added or dropped: lists may reload), problem {text}, load-failed {entry, reason, message} (the model could not be
 * read: load-failure.js's reason). */

// What a job's prompt may hold (the jobs API and the data channel's job_run take 8000 characters).
const PROMPT_MAX_CHARS = 8000;

export class Conversation extends EventTarget {
  id = null;
  slug;
  title = "";
  system = "";
  turns = []; // {role, content, html?, job?, model?, ran_on?, ttft_ms?, tok_s?, trimmed?, run?}
  busy = false; // storing or answering: the page accepts no second prompt meanwhile

  #session;

  constructor(session, slug, data = null) {
    super();
    this.#session = session;
    this.slug = slug;
    if (data) {
      this.id = data.id;
      this.title = data.title;
      this.system = data.system_prompt;
      this.turns = data.turns;
    }
  }

  /** The turns as chat messages, the system prompt first if there is one. */
  messages() {
    const turns = this.turns.map(({ role, content }) => ({ role, content }));
    return this.system.trim() ? [{ role: "system", content: this.system }, ...turns] : turns;
  }

  /** The last turn, if it is an answer: the one "regenerate" replaces. */
  get lastAnswer() {
    const last = this.turns.at(-1);
    return last?.role === "assistant" ? last : null;
  }

  /** Ask `text` as the next user turn and answer it. fields: {entry, maxNewTokens, mode, sampling}. Resolves
   * with whether the question was stored (if not, it is not in the conversation either). */
  async ask(text, fields) {
    let stored = false;
    await this.#guard(async () => {
      await this.#store();
      const turn = { role: "user", content: text, pending: true };
      this.turns.push(turn);
      this.#emit("change");
      try {
        Object.assign(turn, await this.#api("POST", `/${this.id}/turns`, { role: "user", content: text }), { pending: false });
      } catch (error) {
        this.turns.splice(this.turns.indexOf(turn), 1);
        throw error;
      }
      stored = true;
      // The server names a conversation after its first question.
      if (!this.title) await this.#api("GET", `/${this.id}`);
      this.#emitStored();
      try {
        await this.#answer(fields);
      } catch (error) {
        if (!error.reason) throw error;
        // The model could not even be read: the question goes back to its box, unanswered.
        await this.#cut(this.turns.indexOf(turn));
        stored = false;
        throw error;
      }
    });
    return stored;
  }

  /** Answer the last question again, in place of the last answer. */
  async regenerate(fields) {
    const last = this.lastAnswer;
    if (!last || last.run?.running) return;
    await this.#guard(async () => {
      await this.#cut(this.turns.length - 1);
      await this.#answer(fields);
    });
  }

  /** Replace user turn `index` with `text`, dropping every turn after it, and answer that. */
  async edit(index, text, fields) {
    if (this.turns[index]?.role !== "user") return;
    await this.#guard(async () => {
      await this.#cut(index);
      this.busy = false;
      await this.ask(text, fields);
    });
  }

  /** The system prompt for the next answers (stored once the conversation is). */
  async setSystem(text) {
    if (text === this.system) return;
    this.system = text;
    if (this.id) await this.#api("PATCH", `/${this.id}`, { system_prompt: text }).catch((error) => this.#say(error.message));
  }

  async #guard(work) {
    if (this.busy) return;
    this.busy = true;
    this.#emit("change");
    try {
      await work();
    } catch (error) {
      if (error.reason) this.#emit("load-failed", { entry: error.entry, reason: error.reason, message: error.message });
      else this.#say(error.message);
    } finally {
      this.busy = false;
      this.#emit("change");
    }
  }

  async #store() {
    if (this.id) return;
    const created = await this.#api("POST", "", { room: this.slug, system_prompt: this.system });
    this.id = created.id;
    this.#emit("change");
  }

  async #cut(index) {
    await this.#api("DELETE", `/${this.id}/turns/${this.turns[index].position}`);
    this.turns.splice(index);
    this.#emitStored();
  }

  /** Run the conversation as it stands and store the answer as its next turn, linked to its job. */
  async #answer({ entry, maxNewTokens, mode, sampling }) {
    const templated = await this.#session.client.template(entry, this.messages(), { maxNewTokens, maxChars: PROMPT_MAX_CHARS }).catch((error) => {
      if (error.reason) throw Object.assign(new Error(error.message), { reason: error.reason, entry });
      throw new Error(`The conversation could not be prepared for ${entry.id}: ${error.message}`);
    });
    const turn = { role: "assistant", content: "", model: entry.id, trimmed: templated.trimmed, prompt: templated.prompt };
    this.turns.push(turn);
    this.#emit("change");
    const run = this.#session.startRun({ entry, prompt: templated.prompt, messages: templated.messages, maxNewTokens, mode, sampling });
    turn.run = run;
    this.#emit("change");
    await new Promise((resolve) => run.addEventListener("recorded", resolve, { once: true }));
    const text = run.text.trim();
    if (!text) {
      // Nothing came (a failure, or cancelled before the first token): no empty answer is kept.
      this.turns.splice(this.turns.indexOf(turn), 1);
      return;
    }
    const { ttft, tokS, where } = run.metrics ?? {};
    const body = { role: "assistant", content: text, model: entry.id, ran_on: where || "ran in this browser", trimmed: templated.trimmed };
    if (run.job) body.job = run.job.id;
    if (ttft !== null && ttft !== undefined) body.ttft_ms = ttft;
    if (tokS !== null && tokS !== undefined) body.tok_s = tokS;
    Object.assign(turn, await this.#api("POST", `/${this.id}/turns`, body));
    this.#emitStored();
  }

  async #api(method, path, body) {
    const response = await fetch(`/api/conversations${path}`, {
      method,
      headers: { "content-type": "application/json", accept: "application/json", "x-csrftoken": this.#session.csrf },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 204) return null;
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(`The conversation could not be saved: ${data.detail ?? `the server answered ${response.status}.`}`);
    if (data.title !== undefined && data.id === this.id) this.title = data.title;
    return data;
  }

  #emitStored() {
    this.#emit("change");
    this.#emit("stored");
  }

  #say(text) {
    this.#emit("problem", { text });
  }

  #emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
