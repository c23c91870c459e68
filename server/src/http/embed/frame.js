// The embed page's side of <stacklab-demo> (see embed.js): applies the
// host page's theme and colours, and posts the card's height (and whether
// the live card is up) to the page that frames it. Only to that page: the
// `parent` parameter names its origin, and postMessage delivers nothing
// if the framing page is of another origin. Who may frame this page at
// all is the lab's frame-ancestors (--embed-origin).
(() => {
  "use strict";
  const query = new URLSearchParams(location.search);
  const root = document.documentElement;
  root.classList.add("embedded");
  const theme = query.get("theme");
  if (theme === "light" || theme === "dark") root.dataset.theme = theme;
  // Colours and a font from the host page's --stacklab-* properties:
  // plain values only (no url(), quotes or semicolons).
  for (const name of ["accent", "bg", "fg", "card", "border", "font"]) {
    const value = query.get(name);
    if (value && value.length <= 80 && /^[#(),.%\w\s-]+$/.test(value) && !/url\s*\(/i.test(value)) {
      root.style.setProperty("--" + name, value);
    }
  }
  const parent = query.get("parent");
  if (!parent || window.parent === window) return;
  let sent = "";
  const post = () => {
    const card = document.querySelector("main.embed");
    if (!card) return;
    const height = Math.ceil(card.getBoundingClientRect().height);
    // The app removes the static card when it mounts its own.
    const ready = !document.getElementById("prerendered");
    const key = height + "/" + ready;
    if (key === sent) return;
    sent = key;
    try {
      window.parent.postMessage({ type: "stacklab:frame", height, ready }, parent);
    } catch (_) {
      // Not an origin: nothing to tell.
    }
  };
  const watch = () => {
    new MutationObserver(post).observe(document.body, { childList: true, subtree: true, characterData: true });
    new ResizeObserver(post).observe(document.body);
    post();
  };
  if (document.body) watch();
  else document.addEventListener("DOMContentLoaded", watch);
})();
