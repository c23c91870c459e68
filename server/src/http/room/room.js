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
// (`#token=…`, never sent to the server), kept for this tab only.
function token() {
  const m = location.hash.match(/token=([A-Za-z0-9_-]+)/);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, m[1]);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

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
    el("p", {}, "This view shows learners' names and creates classes, so it needs the instructor token. ",
      "`stacklab serve` prints a link with it at start (or set your own with --instructor-token)."),
    el("form", {
      onsubmit: (e) => { e.preventDefault(); sessionStorage.setItem(TOKEN_KEY, input.value.trim()); then(); },
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

// figures: the server's figure table for this demo (labels and
// explanations are defined there once, not here).
function demoSection(demo, points, figures) {
  const ok = points.filter((p) => p.state === "succeeded");
  const failed = points.length - ok.length;
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
      failed ? ` ${failed} run(s) failed.` : ""),
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
        sessionStorage.removeItem(TOKEN_KEY);
        return tokenForm(() => classPage(code));
      }
      return say(err.message, true);
    }
    render(view);
  };
  const later = () => { if (!pending) { pending = true; setTimeout(draw, 250); } };

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
        el("button", { class: "quiet", onclick: () => download("csv") }, "Export CSV"),
        el("button", { class: "quiet", onclick: () => download("json") }, "Export JSON")),
      el("section", { class: "for-room" },
        el("h2", {}, "Run for the room"),
        el("p", { class: "how" }, "A density sweep starts 1, then 2, 3, 4 and 5 instances at once: run it here once, on the projector, instead of forty times from the room. Learners see its result beside theirs."),
        el("div", { class: "tools" },
          el("button", { class: "quiet", id: "room-density-container", onclick: () => runForRoom("density-container") }, "Density sweep: containers"),
          el("button", { class: "quiet", id: "room-density-micro-vm", onclick: () => runForRoom("density-micro-vm") }, "Density sweep: micro-VMs")),
        el("p", { class: "meta", id: "for-room", role: "status" }, forRoom)),
      el("h2", {}, "The room's results"),
      ...(byDemo.size === 0
        ? [el("p", { class: "meta", id: "no-results" }, "No finished runs yet. They appear here as learners' runs finish.")]
        : [...byDemo].map(([demo, points]) => demoSection(demo, points, (view.figures || []).find((f) => f.demo === demo)))),
      el("section", { class: "members" },
        el("h2", {}, `Who joined (${view.members.length} of ${view.class.max_members})`),
        el("table", { id: "members" },
          el("thead", {}, el("tr", {}, el("th", {}, "Name"), el("th", {}, "Joined"), el("th", {}, "Runs"), el("th", {}, "Now"), el("th", {}, ""))),
          el("tbody", {}, ...view.members.map((m) => el("tr", { "data-learner": m.learner },
            el("td", {}, names.get(m.learner)),
            el("td", {}, new Date(m.joined_at_ms).toLocaleTimeString()),
            el("td", {}, m.runs),
            el("td", { class: m.active.length ? "running" : "" }, m.active.map((d) => TITLES[d] || d).join(", ") || "—"),
            el("td", {}, el("button", {
              class: "quiet remove", title: "End their runs and keep them out of this class",
              onclick: () => removeMember(m.learner, names.get(m.learner)),
            }, "Remove"))))))),
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
  events.addEventListener("open", later);
}

// ---------------------------------------------------------------- /join/{code}
function joinPage(code) {
  const name = el("input", { id: "display-name", maxlength: "40", autocomplete: "nickname" });
  main.replaceChildren(
    el("h1", {}, "Join a workshop"),
    el("p", {}, "Class code ", el("strong", { class: "code" }, code)),
    el("p", {}, "Your runs will count for the room: the instructor sees them, with the name you give here (optional). Other learners see the room's numbers, never names."),
    el("form", {
      id: "join-form",
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          const body = { learner: learnerId() };
          if (name.value.trim()) body.display_name = name.value.trim();
          const { json } = await api("POST", `/api/classes/${code}/join`, body);
          localStorage.setItem(CLASS_KEY, json.code);
          main.replaceChildren(
            el("h1", {}, `You joined ${json.name}`),
            el("p", { id: "joined" }, "Your runs now count for the room. On each demo card you will see your result among the room's."),
            el("p", {}, el("a", { class: "button", href: "/" }, "Start the course →")),
            statusLine,
          );
          say("");
        } catch (err) { say(err.message, true); }
      },
    }, el("label", { for: "display-name" }, "Your name for the instructor (optional)", name),
      el("button", { type: "submit" }, "Join")),
    statusLine,
  );
  say("");
}

const [, page, code] = location.pathname.split("/");
if (page === "join" && code) joinPage(code.toUpperCase());
else if (page === "class" && code) classPage(code.toUpperCase());
else createPage();
