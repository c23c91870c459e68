// Workshop mode in the browser: create a class, join one, and the
// instructor's live view of the room. Plain DOM, no framework; every text a
// learner typed is set with textContent, never as HTML.

const main = document.getElementById("main");
const statusLine = document.getElementById("status");
const TOKEN_KEY = "stacklab.instructor";
const LEARNER_KEY = "stacklab.learner";
const CLASS_KEY = "stacklab.class";

const TITLES = {
  "postgres-container": "PostgreSQL in a container",
  "hello-container": "The smallest container",
  "micro-vm": "Micro-VM",
  "density-container": "Container density",
  "density-micro-vm": "Micro-VM density",
  "linux-vm": "Linux in a VM",
  "postgres-vm": "PostgreSQL in a VM",
};
const isContainer = (demo) => demo.includes("container");

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

function say(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", isError);
}

// The instructor token: from the link `stacklab serve` printed
// (`#token=…`: a fragment, never sent to the server, and taken out of the
// address at once), or typed in. Kept in this browser (every tab and
// window) until the instructor chooses "Forget the token"; it travels only
// in the Authorization header.
function token() {
  const m = location.hash.match(/token=([A-Za-z0-9_-]+)/);
  if (m) {
    localStorage.setItem(TOKEN_KEY, m[1]);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return localStorage.getItem(TOKEN_KEY);
}

function forgetToken() {
  localStorage.removeItem(TOKEN_KEY);
  location.assign("/class");
}

const forgetButton = () => el("button", { class: "quiet", id: "forget-token", onclick: forgetToken,
  title: "This browser keeps the instructor token until you forget it here" }, "Forget the token");

async function api(method, path, body, withToken = false) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (withToken) headers["Authorization"] = "Bearer " + (token() || "");
  let response;
  try {
    response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new Error("The stacklab server does not answer.");
  }
  const text = await response.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  if (!response.ok) {
    const error = new Error(json?.message || `The server answered ${response.status}.`);
    error.code = json?.error;
    throw error;
  }
  return { json, text, response };
}

function learnerId() {
  let id = localStorage.getItem(LEARNER_KEY);
  if (!id || !/^[A-Za-z0-9_-]{8,64}$/.test(id)) {
    id = Array.from({ length: 24 }, () => Math.floor(Math.random() * 36).toString(36)).join("");
    localStorage.setItem(LEARNER_KEY, id);
  }
  return id;
}

const ms = (us) => us / 1000 >= 100 ? `${Math.round(us / 1000)} ms` : `${(us / 1000).toFixed(2)} ms`;
const mib = (b) => `${(b / 1048576).toFixed(1)} MiB`;
const when = (t) => new Date(t).toLocaleString();

// ---------------------------------------------------------------- token form
function tokenForm(then) {
  const input = el("input", { id: "token", type: "password", autocomplete: "off", required: "" });
  main.replaceChildren(
    el("h1", {}, "Instructor"),
    el("p", { id: "token-help" }, "This view shows learners' names and creates classes, so it needs the instructor token. ",
      el("code", {}, "stacklab serve"), " prints a link with it at start (or set your own with ",
      el("code", {}, "--instructor-token"), "). This browser keeps it until you choose \u201cForget the token\u201d."),
    el("form", {
      onsubmit: (e) => { e.preventDefault(); localStorage.setItem(TOKEN_KEY, input.value.trim()); then(); },
    }, el("label", { for: "token" }, "Instructor token", input), el("button", { type: "submit" }, "Continue")),
    statusLine,
  );
  say("");
}

// ---------------------------------------------------------------- /class
function createPage() {
  if (!token()) return tokenForm(createPage);
  const name = el("input", { id: "class-name", required: "", maxlength: "80", placeholder: "Tuesday workshop" });
  const hours = el("input", { id: "class-hours", type: "number", min: "1", max: "168", value: "4" });
  const size = el("input", { id: "class-size", type: "number", min: "1", max: "500", value: "100" });
  const code = el("input", { id: "open-code", maxlength: "6", placeholder: "K7QM2P" });
  main.replaceChildren(
    el("h1", {}, "Run a workshop"),
    el("p", {}, "Create a class, show its code on the projector, and watch the room's own measurements arrive."),
    el("form", {
      id: "create-class",
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          const { json } = await api("POST", "/api/classes",
            {
              name: name.value,
              expires_in_secs: Math.round(Number(hours.value) * 3600),
              max_members: Math.round(Number(size.value)),
            }, true);
          location.assign(`/class/${json.code}`);
        } catch (err) { say(err.message, true); }
      },
    }, el("label", { for: "class-name" }, "Name", name),
      el("label", { for: "class-hours" }, "Open for (hours)", hours),
      el("label", { for: "class-size" }, "Learners at most (the room's size)", size),
      el("button", { type: "submit" }, "Create class")),
    el("form", {
      onsubmit: (e) => { e.preventDefault(); location.assign(`/class/${code.value.trim().toUpperCase()}`); },
    }, el("label", { for: "open-code" }, "Or open a class by its code", code),
      el("button", { type: "submit", class: "quiet" }, "Open")),
    el("div", { class: "tools" }, forgetButton()),
    statusLine,
  );
  say("");
}

// ---------------------------------------------------------------- /class/{code}
// The median of sorted numbers (the mean of the middle two for an even count).
const medianOf = (s) => s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;

// A dot per run on a line from 0 to a little past the largest, with the
// median marked and labelled above the dots.
function strip(points, value, fmt, demo) {
  const W = 640, H = 84, L = 8, R = 8;
  const values = points.map(value).filter((v) => typeof v === "number");
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "strip" + (isContainer(demo) ? "" : " vm"));
  svg.setAttribute("role", "img");
  if (values.length === 0) return svg;
  const sorted = [...values].sort((a, b) => a - b);
  const max = sorted[sorted.length - 1] * 1.15 || 1;
  const x = (v) => L + (v / max) * (W - L - R);
  const add = (tag, attrs, text) => {
    const n = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    svg.append(n);
  };
  add("line", { class: "axis", x1: L, x2: W - R, y1: 62, y2: 62 });
  add("text", { x: L, y: 78 }, "0");
  add("text", { x: W - R, y: 78, "text-anchor": "end" }, fmt(max));
  points.forEach((p, i) => {
    const v = value(p);
    if (typeof v !== "number") return;
    add("circle", { cx: x(v), cy: 24 + (i * 7) % 32, r: 5, "data-run": p.run });
  });
  const median = medianOf(sorted);
  const mx = x(median);
  add("line", { class: "median", x1: mx, x2: mx, y1: 16, y2: 64 });
  add("text", { x: mx, y: 11, "text-anchor": mx > W / 2 ? "end" : "start" }, `median ${fmt(median)}`);
  svg.setAttribute("aria-label", `${values.length} runs, median ${fmt(median)}`);
  return svg;
}

function spread(values, fmt) {
  const s = values.filter((v) => typeof v === "number").sort((a, b) => a - b);
  if (s.length === 0) return "no finished runs yet";
  const q = (f) => s[Math.min(s.length - 1, Math.floor(f * s.length))];
  return `${s.length} run(s) · median ${fmt(medianOf(s))} · middle half ${fmt(q(0.25))}–${fmt(q(0.75))} · all ${fmt(s[0])}–${fmt(s[s.length - 1])}`;
}

const svgEl = (svg) => (tag, attrs, text) => {
  const n = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  svg.append(n);
  return n;
};

function newSvg(w, h, cls, label) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("class", cls);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  return svg;
}

// The scales a learner guesses on (as the lesson's slider spans them;
// defined in the API's Quantity): log for times, memory and counts,
// linear for a percentage or a few namespaces, yes/no for the kernel.
const count = (v) => `${Math.round(v)}`;
const GUESS = {
  time: { range: [100, 600e6], fmt: (us) => us < 1000 ? `${Math.round(us)} µs` : us < 1e6 ? `${+(us / 1000).toPrecision(3)} ms` : us < 60e6 ? `${+(us / 1e6).toPrecision(3)} s` : `${+(us / 60e6).toPrecision(3)} min`, what: "time" },
  memory: { range: [102400, 10737418240], fmt: (b) => b < 1048576 ? `${Math.round(b / 1024)} KiB` : b < 1073741824 ? `${+(b / 1048576).toPrecision(3)} MiB` : `${+(b / 1073741824).toPrecision(3)} GiB`, what: "memory" },
  platform_share: { range: [0, 100], linear: true, fmt: (p) => `${Math.round(p)} %`, what: "platform's share of start → ready" },
  density_slope: { range: [1, 10], fmt: (r) => `×${r.toFixed(1)}`, what: "memory of 5 at once over 1" },
  exits: { range: [1, 1e6], fmt: count, what: "exits to the VMM" },
  same_kernel: { range: [0, 1], linear: true, yesNo: true, fmt: (v) => v >= 0.5 ? "yes" : "no", what: "answer to \u201csame kernel as the host?\u201d" },
  shared_namespaces: { range: [0, 8], linear: true, fmt: count, what: "namespaces shared with the host" },
  page_faults: { range: [1, 1e6], fmt: count, what: "guest page faults" },
};

// The room's guesses of one quantity for one demo, as dots on the scale
// the learners guessed on; once the instructor reveals it, the room's
// measured median as a line, and how far the guesses were off.
function guessSection(demo, quantity, guesses, measuredValues, revealed, reveal) {
  const g = GUESS[quantity];
  const made = guesses.filter((x) => typeof x.value === "number");
  const declined = guesses.length - made.length;
  // Guesses whose run has no true value, by the reason the server gives
  // (not finished, failed, a reading missing): said, never drawn as 0.
  const why = {};
  for (const m of made) if (typeof m.measured !== "number" && m.missing) why[m.missing] = (why[m.missing] || 0) + 1;
  const unmatched = Object.entries(why).map(([reason, n]) => `${n} because ${reason}`).join("; ");
  const [lo, hi] = g.range;
  const W = 640, H = 96, L = 12, R = 12;
  const at = g.linear ? (v) => v : Math.log10;
  const x = (v) => L + (at(v) - at(lo)) / (at(hi) - at(lo)) * (W - L - R);
  const svg = newSvg(W, H, "guesses", `${made.length} guesses of the ${g.what}` + (revealed && measuredValues.length ? `, measured median ${g.fmt(medianOf(measuredValues))}` : ""));
  const add = svgEl(svg);
  add("line", { class: "axis", x1: L, x2: W - R, y1: 64, y2: 64 });
  const ticks = g.yesNo ? [0, 1] : g.linear ? [0, 1, 2, 3, 4].map((i) => lo + (hi - lo) * i / 4) : [];
  if (!g.linear) for (let d = Math.ceil(Math.log10(lo)); d <= Math.floor(Math.log10(hi)); d++) if (d % (quantity === "time" ? 2 : 1) === 0 || !ticks.length) ticks.push(10 ** d);
  ticks.forEach((v, i) => {
    add("line", { class: "tick", x1: x(v), x2: x(v), y1: 60, y2: 68 });
    add("text", { x: x(v), y: 84, "text-anchor": i === 0 ? "start" : i === ticks.length - 1 && x(v) > W - R - 40 ? "end" : "middle" }, g.fmt(v));
  });
  made.forEach((m, i) => add("circle", { class: "guess", cx: x(m.value), cy: 20 + (i * 7) % 36, r: 6 }));
  const sorted = [...measuredValues].sort((a, b) => a - b);
  let verdict = "";
  if (revealed && sorted.length) {
    const median = medianOf(sorted);
    const mx = x(Math.min(hi, Math.max(lo, median)));
    add("line", { class: "measured", x1: mx, x2: mx, y1: 6, y2: 70 });
    add("text", { class: "measured-label", x: mx, y: 12, "text-anchor": mx > W / 2 ? "end" : "start" }, `measured ${g.fmt(median)}`);
    const own = made.filter((m) => typeof m.measured === "number");
    const off = own.map((m) => g.linear ? Math.abs(m.measured - m.value) : Math.abs(Math.log10(m.measured / m.value))).sort((a, b) => a - b);
    verdict = !off.length ? "" : g.yesNo
      ? ` Each answer against its own run: ${off.filter((o) => o < 0.5).length} of ${off.length} right.`
      : g.linear
        ? ` Each guess against its own run: median ${g.fmt(medianOf(off))} off; ${off.filter((o) => o < 0.5).length} of ${off.length} spot on.`
        : ` Each guess against its own run: median ${medianOf(off).toFixed(1)} orders of magnitude off; ${off.filter((o) => o < 0.5).length} of ${off.length} within half an order.`;
  }
  return el("div", { class: "guess-block", "data-quantity": quantity },
    el("p", { class: "meta", "data-figure": `guesses-${quantity}` },
      `The room's guesses of the ${g.what} (${g.yesNo ? "yes or no" : g.linear ? "linear scale" : "log scale"}): ${made.length} guess(es)` + (declined ? `, ${declined} \u201cI'd rather not guess\u201d` : "") + "." +
      (revealed ? (sorted.length ? ` Measured in the room: median ${g.fmt(medianOf(sorted))}.` + verdict : " No result measured yet.") +
        (unmatched ? ` Guesses without a true value of their own run: ${unmatched}.` : "") : " The measured result is hidden until you reveal it.")),
    svg,
    revealed ? "" : el("button", { class: "quiet reveal", "data-reveal": `${demo}/${quantity}`, onclick: reveal }, "Reveal the measured result"),
  );
}

// A room sweep's record: its 1 → 5 steps, as two curves with labelled
// axes (time until all N were ready; memory they held together).
const sweeps = new Map();
function sweepCurves(run) {
  const box = el("div", { class: "sweep", "data-run": run });
  const draw = (record) => {
    const finished = record.events.find((e) => e.type === "finished");
    const ms = finished?.outcome?.measurements || [];
    const at = (key) => ms.find((m) => m.key === key)?.value;
    // [N, median, least, most]: least and most where the sweep repeated
    // its steps (micro-VMs); a single sample has none, and no line.
    const series = (metric) => ms.filter((m) => m.key.startsWith(metric + "@"))
      .map((m) => { const n = m.key.split("@")[1]; return [Number(n), m.value, at(`${metric}_min@${n}`), at(`${metric}_max@${n}`)]; })
      .sort((a, b) => a[0] - b[0]);
    const k = at("samples@1");
    box.replaceChildren(
      el("p", { class: "meta" }, k
        ? `Each step was taken ${k} times: a point is their median, its bar runs from the least to the most, the line joins the medians.`
        : "Each step was taken once: single samples, so no line joins them."),
      curve(series("all_ready"), "N started at once", "time until all N were ready", (us) => `${+(us / 1000).toPrecision(3)} ms`),
      curve(series("memory_total"), "N started at once", "memory held together", (b) => `${+(b / 1048576).toPrecision(3)} MiB`),
    );
  };
  if (sweeps.has(run)) draw(sweeps.get(run));
  else api("GET", `/api/runs/${run}`).then(({ json }) => { sweeps.set(run, json); draw(json); }).catch(() => {});
  return box;
}

function curve(points, xLabel, yLabel, fmt) {
  const W = 420, H = 220, L = 70, R = 14, T = 14, B = 44;
  const svg = newSvg(W, H, "curve", `${yLabel} against N: ` + points.map(([n, v, lo, hi]) => `${n} → ${fmt(v)}` + (hi === undefined ? "" : ` (${fmt(lo)}–${fmt(hi)})`)).join(", "));
  const add = svgEl(svg);
  if (!points.length) return svg;
  const spread = points.every((p) => p[2] !== undefined && p[3] !== undefined);
  const maxN = points[points.length - 1][0], maxY = Math.max(...points.map((p) => spread ? p[3] : p[1])) * 1.1 || 1;
  const x = (n) => L + (n - 1) / Math.max(1, maxN - 1) * (W - L - R);
  const y = (v) => H - B - v / maxY * (H - B - T);
  add("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B });
  add("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B });
  for (const [n] of points) add("text", { x: x(n), y: H - B + 16, "text-anchor": "middle" }, n);
  for (const f of [0, 0.5, 1]) add("text", { x: L - 6, y: y(maxY / 1.1 * f) + 4, "text-anchor": "end" }, fmt(maxY / 1.1 * f));
  add("text", { class: "axis-label", x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" }, `${xLabel} (1 → ${maxN})`);
  add("text", { class: "axis-label", x: 14, y: (T + H - B) / 2, "text-anchor": "middle", transform: `rotate(-90 14 ${(T + H - B) / 2})` }, yLabel);
  if (spread) {
    for (const [n, , lo, hi] of points) add("line", { class: "spread", x1: x(n), x2: x(n), y1: y(lo), y2: y(hi) });
    add("polyline", { points: points.map(([n, v]) => `${x(n)},${y(v)}`).join(" ") });
  }
  for (const [n, v] of points) add("circle", { cx: x(n), cy: y(v), r: 5 });
  return svg;
}

// figures: the server's figure table for this demo (labels and
// explanations are defined there once, not here).
function demoSection(demo, points, figures, guesses, revealed, reveal) {
  const ok = points.filter((p) => p.state === "succeeded");
  const failed = points.length - ok.length;
  const byInstructor = ok.filter((p) => !p.learner);
  const sweep = demo.startsWith("density-") ? byInstructor[byInstructor.length - 1] : null;
  const others = ok.map((p) => p.others_at_start).filter((n) => typeof n === "number").sort((a, b) => a - b);
  const f = figures || { time: { label: "Time", how: "" }, waited: { label: "Waited in line", how: "" }, memory: { label: "Memory", how: "" } };
  return el("section", { class: "demo", "data-demo": demo },
    el("h3", {}, TITLES[demo] || demo),
    el("p", { class: "how" }, `${f.time.label}: ${f.time.how}. ${f.memory.label}: ${f.memory.how}.`),
    strip(ok, (p) => p.time_to_ready_us, ms, demo),
    el("p", { class: "meta", "data-figure": "time" }, `${f.time.label}: ` + spread(ok.map((p) => p.time_to_ready_us), ms)),
    el("p", { class: "meta", "data-figure": "waited", title: f.waited.how }, `${f.waited.label} (not part of the time above): ` + spread(ok.map((p) => p.queue_wait_us), ms)),
    strip(ok, (p) => p.memory_bytes, mib, demo),
    el("p", { class: "meta", "data-figure": "memory" }, `${f.memory.label}: ` + spread(ok.map((p) => p.memory_bytes), mib)),
    el("p", { class: "meta" },
      others.length ? `Other runs on the host when each left the queue: median ${medianOf(others)}, most ${others[others.length - 1]}.` : "",
      failed ? ` ${failed} run(s) failed.` : "",
      byInstructor.length ? ` ${byInstructor.length} run(s) by the instructor, for the room.` : ""),
    sweep ? el("p", { class: "meta" }, "The instructor's sweep for the room, step by step:") : "",
    sweep ? sweepCurves(sweep.run) : "",
    // Time and memory against every run of the room; the other kinds
    // against the true value each guess's run carries.
    ...Object.keys(GUESS).filter((q) => guesses.some((g) => g.quantity === q)).map((q) => {
      const of = guesses.filter((g) => g.quantity === q);
      const measured = q === "time" ? ok.map((p) => p.time_to_ready_us) : q === "memory" ? ok.map((p) => p.memory_bytes) : of.map((g) => g.measured);
      return guessSection(demo, q, of, measured.filter((v) => typeof v === "number"),
        revealed.has(`${demo}/${q}`), () => reveal(`${demo}/${q}`));
    }),
  );
}

function classPage(code) {
  if (!token()) return tokenForm(() => classPage(code));
  const projector = new URLSearchParams(location.search).has("projector");
  document.body.classList.toggle("projector", projector);
  let pending = false;
  const draw = async () => {
    pending = false;
    let view;
    try {
      view = (await api("GET", `/api/classes/${code}`, undefined, true)).json;
    } catch (err) {
      if (err.code === "instructor_token_required") {
        localStorage.removeItem(TOKEN_KEY);
        return tokenForm(() => classPage(code));
      }
      return say(err.message, true);
    }
    render(view);
  };
  const later = () => { if (!pending) { pending = true; setTimeout(draw, 250); } };

  // Which demos' measured results the instructor has revealed beside the
  // room's guesses (kept for this tab: a reload keeps the reveal).
  const REVEALED_KEY = `stacklab.revealed.${code}`;
  const revealed = new Set(JSON.parse(sessionStorage.getItem(REVEALED_KEY) || "[]"));
  const reveal = (what) => {
    revealed.add(what);
    sessionStorage.setItem(REVEALED_KEY, JSON.stringify([...revealed]));
    later();
  };

  let picked = "";
  const sendRoom = async (lesson) => {
    try {
      await api("POST", `/api/classes/${code}/lesson`, { lesson }, true);
      say(`Sent the room to ${lesson}.`);
      later();
    } catch (err) { say(err.message, true); }
  };

  // A demo the instructor runs once for the whole room (the density
  // sweeps: fifteen starts each, too heavy for every learner at once).
  let forRoom = "";
  const runForRoom = async (demo) => {
    try {
      const { json } = await api("POST", "/api/runs", { demo, class: code }, true);
      forRoom = `${TITLES[demo]}: started…`;
      later();
      // Followed to the end: a run nobody watches is dropped.
      const events = new EventSource(`/api/runs/${json.id}/events`);
      events.addEventListener("phase", (e) => {
        forRoom = `${TITLES[demo]}: ${JSON.parse(e.data).label}`;
        later();
      });
      events.addEventListener("finished", (e) => {
        events.close();
        const outcome = JSON.parse(e.data).outcome;
        forRoom = outcome.error ? `${TITLES[demo]} failed: ${outcome.error.message}` : `${TITLES[demo]}: done; its result is below.`;
        later();
      });
    } catch (err) { say(err.message, true); }
  };

  // Removes a member: their waiting and running runs end at once and they
  // cannot join again or start runs in this class.
  const removeMember = async (learner, shown) => {
    if (!confirm(`Remove ${shown} from the class? Their waiting and running runs end now, and they cannot join again.`)) return;
    try {
      const { json } = await api("DELETE", `/api/classes/${code}/members/${encodeURIComponent(learner)}`, undefined, true);
      say(`Removed ${shown}; ${json.runs_ended} run(s) of theirs ended.`);
      later();
    } catch (err) { say(err.message, true); }
  };

  const download = async (format) => {
    try {
      const { text } = await api("GET", `/api/classes/${code}/export?format=${format}`, undefined, true);
      const url = URL.createObjectURL(new Blob([text], { type: format === "csv" ? "text/csv" : "application/json" }));
      el("a", { href: url, download: `stacklab-class-${code}.${format}` }).click();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) { say(err.message, true); }
  };

  function render(view) {
    document.title = `${view.class.name} · stacklab workshop`;
    const joinUrl = location.origin + view.class.join_path;
    const byDemo = new Map();
    for (const p of view.points) {
      if (!byDemo.has(p.demo)) byDemo.set(p.demo, []);
      byDemo.get(p.demo).push(p);
    }
    const names = new Map(view.members.map((m) => [m.learner, m.display_name || `learner ${m.learner.slice(0, 6)}`]));
    const lessons = view.lessons || [];
    const numberOf = (slug) => lessons.findIndex((l) => l.slug === slug) + 1;
    const at = lessons.find((l) => l.slug === view.lesson);
    // The page is drawn again on every change in the room: the lesson the
    // instructor picked stays picked.
    const lessonSelect = el("select", { id: "send-lesson", onchange: (e) => { picked = e.target.value; } },
      ...lessons.map((l, i) => {
        const o = el("option", { value: l.slug }, `${i + 1}. ${l.title}`);
        if (l.slug === (picked || view.lesson)) o.selected = true;
        return o;
      }));
    const guessesOf = (demo) => (view.guesses || []).filter((g) => g.demo === demo);
    for (const g of view.guesses || []) {
      if (!byDemo.has(g.demo)) byDemo.set(g.demo, []);
    }
    main.replaceChildren(
      el("h1", {}, view.class.name),
      el("div", { class: "join" },
        el("span", {}, "Join with the code"),
        el("span", { class: "code", id: "join-code" }, view.class.code),
        el("span", {}, "at ", el("a", { href: joinUrl, id: "join-link" }, joinUrl))),
      el("p", { class: view.expired ? "error" : "meta", id: "expiry" }, view.expired
        ? `This class ended at ${when(view.class.expires_at_ms)}: joining is closed; its runs stay.`
        : `Open until ${when(view.class.expires_at_ms)}.`),
      el("div", { class: "tools" },
        el("a", { class: "button quiet", id: "projector", href: projector ? location.pathname : "?projector" }, projector ? "Leave projector mode" : "Projector mode"),
        el("button", { class: "quiet laptop", id: "export-csv", onclick: () => download("csv") }, "Export CSV"),
        el("button", { class: "quiet laptop", onclick: () => download("json") }, "Export JSON"),
        el("span", { class: "laptop" }, forgetButton())),
      el("section", { class: "room-lesson" },
        el("p", { id: "room-lesson" }, at ? `The room is at lesson ${numberOf(at.slug)}: ${at.title}.` : "You have not sent the room to a lesson yet: learners who join start at the course overview."),
        el("form", {
          id: "send-room", class: "laptop",
          onsubmit: (e) => { e.preventDefault(); sendRoom(lessonSelect.value); },
        }, el("label", { for: "send-lesson" }, "Send the room to lesson", lessonSelect),
          el("button", { type: "submit" }, "Send the room there"))),
      el("section", { class: "for-room" },
        el("h2", {}, "Run for the room"),
        el("p", { class: "how" }, "A density sweep starts 1, then 2, 3, 4 and 5 instances at once: run once for the whole room instead of forty times from it. Each learner's card shows its curve, live."),
        el("div", { class: "tools laptop" },
          el("button", { class: "quiet", id: "room-density-container", onclick: () => runForRoom("density-container") }, "Density sweep: containers"),
          el("button", { class: "quiet", id: "room-density-micro-vm", onclick: () => runForRoom("density-micro-vm") }, "Density sweep: micro-VMs")),
        el("p", { class: "meta", id: "for-room", role: "status" }, forRoom)),
      el("h2", {}, "The room's results"),
      ...(byDemo.size === 0
        ? [el("p", { class: "meta", id: "no-results" }, "No finished runs yet. They appear here as learners' runs finish.")]
        : [...byDemo].map(([demo, points]) => demoSection(demo, points, (view.figures || []).find((f) => f.demo === demo), guessesOf(demo), revealed, reveal))),
      el("section", { class: "members" },
        el("h2", {}, `Who joined (${view.members.length} of ${view.class.max_members})`),
        el("table", { id: "members" },
          el("thead", {}, el("tr", {}, el("th", {}, "Name"), el("th", {}, "Joined"),
            el("th", { title: "Lessons opened, by number" }, "Lessons read"),
            el("th", { title: "Only the first answer to each question counts" }, "Quiz, first try"),
            el("th", { title: "Guesses sent with their runs" }, "Predictions"),
            el("th", {}, "Runs"), el("th", {}, "Now"), el("th", {}, ""))),
          el("tbody", {}, ...view.members.map((m) => {
            const l = m.learning || { lessons_read: [], answered: 0, first_try_right: 0, guesses: 0, declined: 0 };
            const read = l.lessons_read.map(numberOf).filter((n) => n > 0);
            return el("tr", { "data-learner": m.learner },
            el("td", {}, names.get(m.learner)),
            el("td", {}, new Date(m.joined_at_ms).toLocaleTimeString()),
            el("td", { "data-col": "read", title: l.lessons_read.join(", ") }, `${read.length} of ${lessons.length}` + (read.length ? ` (${read.join(", ")})` : "")),
            el("td", { "data-col": "quiz" }, l.answered ? `${l.first_try_right} of ${l.answered} right` : "none answered"),
            el("td", { "data-col": "predictions" }, l.guesses ? `${l.guesses}` + (l.declined ? ` (${l.declined} declined)` : "") : "none"),
            el("td", {}, m.runs),
            el("td", { class: m.active.length ? "running" : "" }, m.active.map((d) => TITLES[d] || d).join(", ") || "—"),
            el("td", {}, el("button", {
              class: "quiet remove", title: "End their runs and keep them out of this class",
              onclick: () => removeMember(m.learner, names.get(m.learner)),
            }, "Remove")));
          })))),
      el("section", { class: "capacity" },
        el("h2", {}, "This server"),
        el("table", {},
          el("thead", {}, el("tr", {}, el("th", {}, "Demos"), el("th", {}, "Slots"), el("th", {}, "In use"), el("th", {}, "Waiting"), el("th", {}, "Recent median per run"))),
          el("tbody", {}, ...view.capacity.map((c) => el("tr", {},
            el("td", {}, c.demos.map((d) => TITLES[d] || d).join(", ")),
            el("td", { title: c.sized_by }, `${c.slots} (${c.sized_by})`),
            el("td", {}, c.in_use),
            el("td", { title: "Runs waiting, and the most that may wait" }, `${c.queued} of ${c.max_waiting}`),
            el("td", {}, c.recent_median_ms == null ? "none yet" : `${c.recent_median_ms} ms`)))))),
      statusLine,
    );
    say(`Updated ${new Date().toLocaleTimeString()}; live as runs finish.`);
  }

  draw();
  const events = new EventSource(`/api/classes/${code}/events`);
  events.addEventListener("changed", later);
  events.addEventListener("lesson", later);
  events.addEventListener("learning", later);
  events.addEventListener("open", later);
}

// ---------------------------------------------------------------- /join/{code}
// Someone already in sees so (and where the room is), not the form again;
// the link to the room's lesson follows the instructor live.
async function joinPage(code) {
  let now = null;
  try {
    now = (await api("GET", `/api/classes/${code}/now?learner=${learnerId()}`)).json;
  } catch { /* no such class: the form says so when it is sent */ }
  if (now?.member) return joinedPage(code, now.name, now.lesson, true);
  const name = el("input", { id: "display-name", maxlength: "40", autocomplete: "nickname" });
  main.replaceChildren(
    el("h1", {}, "Join a workshop"),
    el("p", {}, "Class code ", el("strong", { class: "code" }, code)),
    el("p", {}, "Your runs will count for the room: the instructor sees them, with the name you give here (optional), and which lessons you read, your first answer to each quiz question and your guesses. Other learners see the room's numbers, never names."),
    el("form", {
      id: "join-form",
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          const body = { learner: learnerId() };
          if (name.value.trim()) body.display_name = name.value.trim();
          const { json } = await api("POST", `/api/classes/${code}/join`, body);
          localStorage.setItem(CLASS_KEY, json.code);
          joinedPage(json.code, json.name, now?.lesson, false);
        } catch (err) { say(err.message, true); }
      },
    }, el("label", { for: "display-name" }, "Your name for the instructor (optional)", name),
      el("button", { type: "submit" }, "Join")),
    statusLine,
  );
  say("");
}

function joinedPage(code, name, lesson, again) {
  localStorage.setItem(CLASS_KEY, code);
  const go = el("a", { class: "button", id: "room-link" });
  const point = (slug) => {
    go.href = slug ? `/lessons/${slug}` : "/";
    go.textContent = slug ? "Go to the lesson the room is on \u2192" : "Start the course \u2192";
    go.dataset.lesson = slug || "";
  };
  point(lesson);
  main.replaceChildren(
    el("h1", {}, again ? `You are in ${name}` : `You joined ${name}`),
    el("p", { id: "joined" }, again
      ? "This browser already joined this class: your runs count for the room. No need to join again."
      : "Your runs now count for the room. On each demo card you will see your result among the room's."),
    el("p", {}, go),
    statusLine,
  );
  say("");
  // The instructor sends the room on: this page goes along.
  const events = new EventSource(`/api/classes/${code}/events`);
  events.addEventListener("lesson", (e) => {
    const slug = JSON.parse(e.data).lesson;
    point(slug);
    location.assign(`/lessons/${slug}`);
  });
}

const [, page, code] = location.pathname.split("/");
if (page === "join" && code) joinPage(code.toUpperCase());
else if (page === "class" && code) classPage(code.toUpperCase());
else createPage();
