// Events-per-day bar chart on the dashboard; data comes from the json_script block.
(function () {
  const canvas = document.getElementById("events-chart");
  const source = document.getElementById("events-chart-data");
  if (!canvas || !source || typeof Chart === "undefined") return;
  const data = JSON.parse(source.textContent);
  new Chart(canvas, {
    type: "bar",
    data: {
      labels: data.labels,
      datasets: [{ label: "Events", data: data.counts, backgroundColor: "#3f6fd8" }],
    },
    options: {
      animation: false,
      plugins: { legend: { display: false } },
      scales: { x: { ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 10 } }, y: { beginAtZero: true } },
    },
  });
  canvas.dataset.rendered = "true";
})();
