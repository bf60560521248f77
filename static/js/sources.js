// Stored / rejected / dropped (consent) events per hour on a source's page; data comes from the json_script block.
(function () {
  const canvas = document.getElementById("volume-chart");
  const source = document.getElementById("volume-chart-data");
  if (!canvas || !source || typeof Chart === "undefined") return;
  const data = JSON.parse(source.textContent);
  new Chart(canvas, {
    type: "bar",
    data: {
      labels: data.labels,
      datasets: [
        { label: "Stored", data: data.accepted, backgroundColor: "#3f6fd8", stack: "v" },
        { label: "Rejected", data: data.rejected, backgroundColor: "#d8543f", stack: "v" },
        { label: "Dropped (consent)", data: data.dropped || [], backgroundColor: "#9a9a9a", stack: "v" },
      ],
    },
    options: {
      animation: false,
      scales: { x: { stacked: true, ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 12 } },
                y: { stacked: true, beginAtZero: true } },
    },
  });
  canvas.dataset.rendered = "true";
})();
