// Ops room: refresh the live part of the page every second without a reload.
// (No inline handlers anywhere: the pages' Content-Security-Policy forbids them.)
(function () {
  var pick = document.querySelector("form.evpick select");
  if (pick) pick.addEventListener("change", function () { pick.form.submit(); });
})();
(function () {
  var box = document.getElementById("live");
  if (!box || !box.dataset.live) return;
  var busy = false;
  setInterval(function () {
    if (busy || document.hidden) return;
    busy = true;
    fetch(box.dataset.live, {credentials: "same-origin", cache: "no-store"})
      .then(function (r) {
        if (r.status === 401 || r.redirected) { location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) { if (html !== null && html !== box.innerHTML) box.innerHTML = html; })
      .catch(function () {})
      .then(function () { busy = false; });
  }, 1000);
})();
