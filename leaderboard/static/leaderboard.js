// pigbench leaderboard: sortable tables and the evaluator-type filter. No network access, no
// dependencies; works from file://. Without scripts the tables read in their built order (best
// first), their sort buttons stay disabled and the filter stays hidden. Cells sort by their data-sort attribute (else their text);
// empty or non-numeric values in a numeric column always sort last, and so do the rows of runs on
// another split (data-other-split), which are never ranked with the main split's runs.
(function () {
  "use strict";

  function key(row, index, numeric) {
    var cell = row.cells[index];
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    if (!numeric) { return raw.toLowerCase(); }
    var value = parseFloat(raw);
    return isNaN(value) ? null : value;
  }

  function sortBy(table, th, descending) {
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var numeric = th.getAttribute("data-sort-type") === "num";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var apart = a.hasAttribute("data-other-split") - b.hasAttribute("data-other-split");
      if (apart !== 0) { return apart; }
      var x = key(a, index, numeric), y = key(b, index, numeric);
      if (x === y) { return 0; }
      if (x === null) { return 1; }
      if (y === null) { return -1; }
      var order = x < y ? -1 : 1;
      return descending ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(th.parentNode.children, function (other) { other.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
  }

  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.querySelectorAll("thead th[data-sort-type]"), function (th) {
      var button = th.querySelector("button");
      if (!button) { return; }
      button.disabled = false; // the page ships them disabled: without this script they would do nothing
      button.addEventListener("click", function () {
        // Numbers start high-to-low (best first), text starts A-to-Z; a second click reverses.
        var current = th.getAttribute("aria-sort");
        var descending = current ? current === "ascending" : th.getAttribute("data-sort-type") === "num";
        sortBy(table, th, descending);
      });
    });
  });

  var filters = {
    "all": function () { return true; },
    "reference-free": function (row) { return row.getAttribute("data-refs") === "free"; },
    "with-reference": function (row) { return row.getAttribute("data-refs") === "with"; },
    "reasoning": function (row) { return row.getAttribute("data-reasoning") === "yes"; }
  };
  var select = document.getElementById("filter");
  if (select) {
    select.closest(".controls").hidden = false; // hidden in the HTML: without this script it would do nothing
    var apply = function () {
      var keep = filters[select.value] || filters.all;
      var rows = document.querySelectorAll("table.board tbody tr");
      var shown = 0;
      Array.prototype.forEach.call(rows, function (row) {
        row.hidden = !keep(row);
        if (!row.hidden) { shown += 1; }
      });
      var count = document.getElementById("filter-count");
      if (count) { count.textContent = shown + " of " + rows.length + " runs shown"; }
    };
    select.addEventListener("change", apply);
    apply();
  }
}());
