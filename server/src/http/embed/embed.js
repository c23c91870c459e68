// <stacklab-demo demo="postgres-container"></stacklab-demo>: a live demo
// of a stacklab lab inside any page. Load once per page:
//   <script type="module" src="https://LAB/embed.js"></script>
//
// The element frames LAB/embed/{demo} (the same card learners see in the
// lessons) once the lab answers, sized to its content. Until then, and for
// good if the lab does not answer, the element's own children show: they
// are its fallback. With no children it shows the lab's latest successful
// result for the demo (GET /api/demos/{demo}/latest, remembered in this
// browser), saying when and where it was measured, or says the lab is
// unreachable.
//
// Attributes: demo (required), theme="light|dark" (else the reader's
// setting), view="x-ray" (the card's runs ask for the kernel's events in
// their x-ray), lab="https://LAB" (only needed by a site that serves its own
// copy of this file, so that its fallback works even when the lab is down;
// otherwise the lab is where this file came from). CSS custom properties on the element pass through to the card:
// --stacklab-accent, --stacklab-bg, --stacklab-fg, --stacklab-card,
// --stacklab-border, --stacklab-font.
// The element's `state` attribute says where it is: loading, live,
// fallback (the lab did not answer), refused (this site may not embed the
// lab) or error.

const LAB = new URL(import.meta.url).origin;
const PASSED = ["accent", "bg", "fg", "card", "border", "font"];
/// How long the live card may take to come up before the fallback stays.
const LIVE_WITHIN_MS = 20000;

const STYLE = `
:host { display: block; margin: 1rem 0; }
iframe { display: block; width: 100%; border: 0; color-scheme: normal; }
iframe[hidden], .note[hidden], .latest[hidden] { display: none; }
.note, .latest { font: 0.95rem/1.5 system-ui, sans-serif; border: 1px solid #8888; border-radius: 8px; padding: 0.75rem 1rem; }
.note { margin-top: 0.5rem; }
.latest h3 { margin: 0 0 0.4rem; font-size: 1rem; }
.latest ul { margin: 0.4rem 0; padding-left: 1.2rem; }
.latest small { display: block; opacity: 0.8; }
`;

class StacklabDemo extends HTMLElement {
  connectedCallback() {
    if (this.shadowRoot) return;
    const shadow = this.attachShadow({ mode: "open" });
    shadow.innerHTML = `<style>${STYLE}</style><slot></slot><div class="latest" hidden></div><p class="note" role="status" hidden></p><iframe hidden></iframe>`;
    this.slotEl = shadow.querySelector("slot");
    this.latestEl = shadow.querySelector(".latest");
    this.noteEl = shadow.querySelector(".note");
    this.frame = shadow.querySelector("iframe");
    this.demo = this.getAttribute("demo") || "";
    this.lab = (this.getAttribute("lab") || LAB).replace(/\/+$/, "");
    this.hasFallback = [...this.childNodes].some(
      (n) => n.nodeType === Node.ELEMENT_NODE || (n.nodeType === Node.TEXT_NODE && n.textContent.trim()),
    );
    this.onMessage = (e) => this.message(e);
    window.addEventListener("message", this.onMessage);
    this.start();
  }

  disconnectedCallback() {
    window.removeEventListener("message", this.onMessage);
    clearTimeout(this.timer);
  }

  setState(state) {
    this.setAttribute("state", state);
  }

  note(html) {
    this.noteEl.innerHTML = html;
    this.noteEl.hidden = false;
  }

  async start() {
    this.setState("loading");
    const lab = this.lab;
    const cacheKey = `stacklab.latest.${lab}.${this.demo}`;
    let answer;
    try {
      answer = await fetch(`${lab}/api/demos/${encodeURIComponent(this.demo)}/latest`, { mode: "cors" });
    } catch (_) {
      // No answer at all: the lab is down or unreachable from here.
      this.setState("fallback");
      if (!this.hasFallback) {
        const remembered = readJson(localStorage.getItem(cacheKey));
        if (remembered) this.showLatest(remembered, false);
        this.note(`The live lab at <a href="${lab}">${escapeHtml(lab)}</a> is unreachable, so this demo cannot run now.`);
      }
      return;
    }
    const body = readJson(await answer.text().catch(() => ""));
    if (answer.status === 403) {
      // The lab answered and said no: this site is not one it serves.
      this.setState("refused");
      this.note(
        `This page cannot show the live demo: ${escapeHtml(body?.message || "the lab refused this site")}.`,
      );
      return;
    }
    if (answer.ok && body) {
      try {
        localStorage.setItem(cacheKey, JSON.stringify(body));
      } catch (_) {
        // Storage full or off: nothing to remember then.
      }
      if (!this.hasFallback) this.showLatest(body, true);
    } else if (answer.status === 404 && /unknown demo/i.test(body?.message || "")) {
      this.setState("error");
      this.note(escapeHtml(body.message));
      return;
    }
    const params = new URLSearchParams({ parent: location.origin });
    const theme = this.getAttribute("theme");
    if (theme === "light" || theme === "dark") params.set("theme", theme);
    // view="x-ray": the card's runs capture the kernel's events for the x-ray.
    if (this.getAttribute("view") === "x-ray") params.set("view", "x-ray");
    const style = getComputedStyle(this);
    for (const name of PASSED) {
      const value = style.getPropertyValue(`--stacklab-${name}`).trim();
      if (value) params.set(name, value);
    }
    this.frame.title = `Live demo: ${this.demo}`;
    this.frame.src = `${lab}/embed/${encodeURIComponent(this.demo)}?${params}`;
    this.timer = setTimeout(() => {
      if (this.getAttribute("state") !== "live") {
        this.setState("fallback");
        if (!this.hasFallback) this.note(`The live demo did not load from <a href="${lab}">${escapeHtml(lab)}</a>.`);
      }
    }, LIVE_WITHIN_MS);
  }

  message(e) {
    if (e.origin !== this.lab || e.source !== this.frame.contentWindow) return;
    const data = e.data || {};
    if (data.type !== "stacklab:frame") return;
    if (Number.isFinite(data.height) && data.height > 0) this.frame.style.height = `${data.height}px`;
    if (data.ready && this.getAttribute("state") !== "live") {
      clearTimeout(this.timer);
      this.slotEl.hidden = true;
      this.slotEl.style.display = "none";
      this.latestEl.hidden = true;
      this.noteEl.hidden = true;
      this.frame.hidden = false;
      this.setState("live");
    }
  }

  // The lab's latest successful run: its figures, each with how it was
  // measured, and when and on what host.
  showLatest(record, fresh) {
    const lab = this.lab;
    const finished = (record.events || []).find((e) => e && e.type === "finished");
    const outcome = finished && finished.outcome;
    if (!outcome || outcome.result !== "ready") return;
    const figures = (outcome.measurements || [])
      .slice(0, 4)
      .map((m) => `<li title="${escapeHtml(m.how)}">${escapeHtml(m.label)}: <strong>${formatValue(m.value, m.unit)}</strong> <small>${escapeHtml(m.how)}</small></li>`)
      .join("");
    const host = (outcome.facts || []).find((f) => f.key === "host");
    const load = (outcome.facts || []).find((f) => f.key === "load");
    const when = record.accepted_at_ms ? new Date(record.accepted_at_ms).toLocaleString() : "an unknown time";
    this.latestEl.innerHTML =
      `<h3>Last measured on the lab: ${escapeHtml(record.demo)}</h3><ul>${figures}</ul>` +
      `<small>Measured ${escapeHtml(when)}${host ? ` on ${escapeHtml(host.value)}` : ""}` +
      `${load ? `; load then: ${escapeHtml(load.value)}` : ""} (lab <a href="${lab}">${escapeHtml(lab)}</a>).` +
      `${fresh ? " The live demo is loading…" : " Remembered by this browser from an earlier visit."}</small>`;
    this.latestEl.hidden = false;
  }
}

function readJson(text) {
  try {
    return text ? JSON.parse(text) : null;
  } catch (_) {
    return null;
  }
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function formatValue(value, unit) {
  if (unit === "micros") return `${(value / 1000).toFixed(1)} ms`;
  if (unit === "bytes") return `${(value / 1048576).toFixed(1)} MiB`;
  return `${value} ${escapeHtml(unit)}`;
}

if (!customElements.get("stacklab-demo")) customElements.define("stacklab-demo", StacklabDemo);
