// vqbench leaderboard tables: click a header to sort (first click: better values first, following the
// column's arrow), type in a table's filter box to show only rows containing the text. No dependencies.
"use strict";

function cellKey(row, index) {
  const cell = row.cells[index];
  const value = cell.getAttribute("data-value");
  if (value !== null && value !== "") {
    const number = Number(value);
    if (!Number.isNaN(number)) return { missing: false, number: number, text: "" };
  }
  if (cell.classList.contains("missing")) return { missing: true, number: 0, text: "" };
  return { missing: false, number: NaN, text: cell.textContent.trim().toLowerCase() };
}

function sortTable(table, index, header) {
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const current = header.getAttribute("aria-sort");
  // first click: the better end first (descending for a higher-is-better column), then toggle
  let ascending = header.getAttribute("data-dir") === "down" || header.getAttribute("data-dir") === null;
  if (current === "ascending") ascending = false;
  else if (current === "descending") ascending = true;
  rows.sort(function (a, b) {
    const x = cellKey(a, index), y = cellKey(b, index);
    if (x.missing !== y.missing) return x.missing ? 1 : -1;         // missing values always last
    let order;
    if (!Number.isNaN(x.number) && !Number.isNaN(y.number)) order = x.number - y.number;
    else order = x.text < y.text ? -1 : x.text > y.text ? 1 : 0;
    return ascending ? order : -order;
  });
  rows.forEach(function (r) { body.appendChild(r); });
  Array.from(table.tHead.rows[0].cells).forEach(function (h) {
    h.removeAttribute("aria-sort");
    h.classList.remove("sorted-asc", "sorted-desc");
  });
  header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  header.classList.add(ascending ? "sorted-asc" : "sorted-desc");
}

function filterTable(table, text) {
  const needle = text.trim().toLowerCase();
  Array.from(table.tBodies[0].rows).forEach(function (row) {
    row.hidden = needle !== "" && !row.textContent.toLowerCase().includes(needle);
  });
}

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("table.leaderboard").forEach(function (table) {
    Array.from(table.tHead.rows[0].cells).forEach(function (header, index) {
      header.classList.add("sortable");
      header.addEventListener("click", function () { sortTable(table, index, header); });
    });
    const box = document.querySelector('input.filter[data-table="' + table.id + '"]');
    if (box) box.addEventListener("input", function () { filterTable(table, box.value); });
  });
});
