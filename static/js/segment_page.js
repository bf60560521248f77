// Segment page charts: size over time (line) and entered / exited per day (bars).
(function () {
  const source = document.getElementById("segment-chart-data");
  if (!source || typeof Chart === "undefined") return;
  const data = JSON.parse(source.textContent);
  const options = {animation: false, plugins: {legend: {display: true}},
    scales: {x: {ticks: {maxRotation: 0, autoSkip: true, maxTicksLimit: 10}}, y: {beginAtZero: true}}};
  const size = document.getElementById("size-chart");
  if (size) {
    new Chart(size, {type: "line", data: {labels: data.labels, datasets: [{label: "Members", data: data.size, borderColor: "#3f6fd8", tension: 0.2}]}, options});
    size.dataset.rendered = "true";
  }
  const changes = document.getElementById("changes-chart");
  if (changes) {
    new Chart(changes, {type: "bar", data: {labels: data.labels, datasets: [
      {label: "Entered", data: data.entered, backgroundColor: "#2e9d5b"},
      {label: "Exited", data: data.exited, backgroundColor: "#d05a4e"}]}, options});
    changes.dataset.rendered = "true";
  }
})();
