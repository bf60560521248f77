// Imports page: drag-and-drop upload with a progress bar (XHR upload events), then the mapping step.
(function () {
  const form = document.getElementById("upload-form");
  if (!form) return;
  const zone = document.getElementById("dropzone");
  const input = form.querySelector('input[type="file"]');
  const chosen = document.getElementById("chosen-file");
  const bar = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  const errorList = document.getElementById("upload-error");
  const button = document.getElementById("upload-button");

  function showChosen() {
    chosen.textContent = input.files.length ? input.files[0].name + " (" + (input.files[0].size / 1048576).toFixed(1) + " MB)" : "";
  }
  function showErrors(messages) {
    errorList.innerHTML = "";
    messages.forEach(function (text) { const li = document.createElement("li"); li.textContent = text; errorList.appendChild(li); });
    errorList.hidden = messages.length === 0;
  }
  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("dragging"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.remove("dragging"); });
  });
  zone.addEventListener("drop", function (event) {
    if (event.dataTransfer && event.dataTransfer.files.length) { input.files = event.dataTransfer.files; showChosen(); }
  });
  input.addEventListener("change", showChosen);

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!input.files.length) { showErrors(["Choose a file to upload."]); return; }
    showErrors([]);
    const request = new XMLHttpRequest();
    request.open("POST", form.action);
    request.setRequestHeader("Accept", "application/json");
    request.upload.addEventListener("progress", function (e) {
      if (e.lengthComputable) {
        bar.hidden = false; bar.value = Math.round(100 * e.loaded / e.total);
        status.textContent = "Uploading… " + bar.value + " %";
      }
    });
    request.addEventListener("load", function () {
      let body = {};
      try { body = JSON.parse(request.responseText); } catch (e) { body = {}; }
      if (request.status === 201 && body.next) { status.textContent = "Uploaded. Opening the mapping step…"; window.location = body.next; return; }
      button.disabled = false; bar.hidden = true; status.textContent = "";
      const messages = [];
      Object.values(body.errors || {}).forEach(function (list) { list.forEach(function (m) { messages.push(m); }); });
      showErrors(messages.length ? messages : [body.message || "The upload failed (HTTP " + request.status + ")."]);
    });
    request.addEventListener("error", function () {
      button.disabled = false; bar.hidden = true; showErrors(["The upload was interrupted. Check the connection and try again."]);
    });
    button.disabled = true; bar.hidden = false; bar.value = 0;
    request.send(new FormData(form));
  });
})();
