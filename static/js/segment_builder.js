// The segment builder: edit a condition tree with pickers fed from the data, see the estimated
// size, a sample and a readable sentence as you go, and save through the staff API (a live
// segment first shows a dry-run diff). No framework: the tree is plain JSON rendered to DOM.
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("builder-config").textContent);
  const api = config.api;
  const csrf = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
  const container = document.getElementById("conditions");
  const rootMatch = document.getElementById("root-match");
  const UNITS = ["minutes", "hours", "days", "weeks"];
  const COUNT_OPS = [[">=", "at least"], [">", "more than"], ["=", "exactly"], ["<", "fewer than"], ["<=", "at most"], ["!=", "not"]];
  const COMPARE_OPS = ["=", "!=", "<", "<=", ">", ">=", "in", "not in", "contains", "starts with", "is set", "is not set"];
  const OPS_BY_TYPE = {
    string: ["=", "!=", "in", "not in", "contains", "starts with", "is set", "is not set"],
    number: ["=", "!=", "<", "<=", ">", ">=", "between", "in", "not in", "is set", "is not set"],
    datetime: ["within last", "not within last", "before", "after", "is set", "is not set"],
    boolean: ["=", "!=", "is set", "is not set"],
    json: ["=", "!=", "<", "<=", ">", ">=", "in", "not in", "contains", "starts with", "is set", "is not set", "within last", "before", "after"],
  };
  const WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
  const BUCKETS = [["after_work", "after work (17–22 h)"], ["morning", "morning (6–12 h)"], ["lunch", "lunch (12–14 h)"],
    ["afternoon", "afternoon (14–17 h)"], ["late_evening", "late evening (22–24 h)"], ["night", "night (0–6 h)"]];
  const TYPE_LABELS = {event: "Did an event", event_time: "First / last time", sequence: "Sequence", transaction: "Purchases",
    trait: "Profile field", context: "Device / location", activity: "Active at", segment: "Segment", consent: "Consent", or: "Any of", and: "All of"};
  const DEFAULTS = {
    event: () => ({type: "event", event: "product_viewed", window: {last: 30, unit: "days"}, count: {operator: ">=", value: 1}}),
    event_time: () => ({type: "event_time", event: "product_viewed", occurrence: "last", operator: "within last", value: 7, unit: "days"}),
    sequence: () => ({type: "sequence", first: {event: "added_to_cart"}, then: {event: "checkout_started"}, absent: true,
      within: {value: 10, unit: "minutes"}, window: {last: 1, unit: "days"}}),
    transaction: () => ({type: "transaction", measure: "count", window: {last: 90, unit: "days"}, operator: ">=", value: 1}),
    trait: () => ({type: "trait", field: "country", operator: "=", value: ""}),
    context: () => ({type: "context", field: "device_type", operator: "=", value: "mobile"}),
    activity: () => ({type: "activity", hours: "after_work", weekdays: ["mon", "tue", "wed", "thu", "fri"],
      window: {last: 30, unit: "days"}, count: {operator: ">=", value: 3}}),
    segment: () => ({type: "segment", operator: "in", segment: ""}),
    consent: () => ({type: "consent", purpose: "email_marketing"}),
    or: () => ({type: "or", conditions: []}),
  };

  let root = {type: "and", conditions: []};
  if (config.definition && config.definition.root) {
    const given = config.definition.root;
    root = (given.type === "and" || given.type === "or") ? given : {type: "and", conditions: [given]};
  }
  const original = JSON.stringify(definition());
  const catalog = {};

  // -- small DOM helpers --------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "on") for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
      else if (key === "text") node.textContent = value;
      else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) if (child) node.append(child);
    return node;
  }
  function select(options, value, onChange, label) {
    const node = el("select", {"aria-label": label, on: {change: () => onChange(node.value)}},
      options.map((option) => {
        const [optionValue, text] = Array.isArray(option) ? option : [option, option];
        return el("option", {value: optionValue, selected: String(optionValue) === String(value), text});
      }));
    return node;
  }
  function field(type, value, onChange, label, extra) {
    const node = el("input", {type, value: value === undefined || value === null ? "" : value, "aria-label": label, ...(extra || {}),
      on: {input: () => onChange(node.value)}});
    return node;
  }
  let listCounter = 0;
  function suggestions(input, loader) {
    const id = "list-" + (++listCounter);
    const list = el("datalist", {id});
    input.setAttribute("list", id);
    loader().then((items) => {
      for (const item of items || []) {
        const value = item.value === null || item.value === undefined ? "" : String(item.value);
        list.append(el("option", {value, label: item.count === null || item.count === undefined ? value : `${value} (${Number(item.count).toLocaleString()})`}));
      }
    }).catch(() => {});
    return [input, list];
  }
  function load(path) {
    if (!catalog[path]) catalog[path] = fetch(api + path, {credentials: "same-origin"}).then((r) => r.ok ? r.json() : []);
    return catalog[path];
  }
  const number = (text) => (text === "" || isNaN(Number(text)) ? text : Number(text));
  function typedValue(text, type) {
    if (type === "number") return number(text);
    if (type === "json") {
      if (text === "true") return true;
      if (text === "false") return false;
      return number(text);
    }
    return text;
  }
  const listValue = (text, type) => text.split(",").map((part) => part.trim()).filter(Boolean).map((part) => typedValue(part, type));

  // -- editors per node type ----------------------------------------------------------------
  function windowEditor(owner, key) {
    const current = owner[key] || {last: 30, unit: "days"};
    const between = "from" in current;
    const mode = select([["last", "in the last"], ["between", "between"]], between ? "between" : "last", (value) => {
      owner[key] = value === "last" ? {last: 30, unit: "days"} : {from: "", to: ""};
      render(); changed();
    }, "Window");
    if (!between) {
      return [mode, field("number", current.last, (v) => { current.last = number(v); changed(); }, "Window length", {min: 1}),
        select(UNITS, current.unit, (v) => { current.unit = v; changed(); }, "Window unit")];
    }
    return [mode, field("date", current.from, (v) => { current.from = v; changed(); }, "From date"), el("span", {text: "and"}),
      field("date", current.to, (v) => { current.to = v; changed(); }, "To date")];
  }
  function countEditor(count) {
    return [select(COUNT_OPS, count.operator, (v) => { count.operator = v; changed(); }, "Count comparison"),
      field("number", count.value, (v) => { count.value = number(v); changed(); }, "Count", {min: 0}), el("span", {text: "times"})];
  }
  function eventInput(owner, key, label) {
    return suggestions(field("text", owner[key], (v) => { owner[key] = v; changed(); }, label || "Event name"), () => load("catalog/events/"));
  }
  function filtersEditor(step) {
    const filters = step.where || [];
    const box = el("div", {class: "filters"});
    filters.forEach((filter, index) => {
      const property = suggestions(field("text", filter.property, (v) => { filter.property = v; changed(); }, "Property"),
        () => load(`catalog/properties/?event=${encodeURIComponent(step.event || "")}`));
      const value = suggestions(field("text", Array.isArray(filter.value) ? filter.value.join(", ") : filter.value, (v) => {
        filter.value = filter.operator === "in" || filter.operator === "not in" ? listValue(v, "json") : typedValue(v, "json"); changed();
      }, "Property value"), () => load(`catalog/property-values/?event=${encodeURIComponent(step.event || "")}&property=${encodeURIComponent(filter.property || "")}`));
      box.append(el("div", {class: "row"}, el("span", {text: "where"}), property,
        select(COMPARE_OPS, filter.operator, (v) => { filter.operator = v; if (v.startsWith("is ")) delete filter.value; render(); changed(); }, "Property comparison"),
        filter.operator && filter.operator.startsWith("is ") ? null : value,
        el("button", {type: "button", class: "secondary outline small", text: "×", "aria-label": "Remove filter",
          on: {click: () => { filters.splice(index, 1); if (!filters.length) delete step.where; render(); changed(); }}})));
    });
    box.append(el("button", {type: "button", class: "secondary outline small", text: "+ property filter",
      on: {click: () => { step.where = filters; filters.push({property: "category", operator: "=", value: ""}); render(); changed(); }}}));
    return box;
  }
  const EDITORS = {
    event(node) {
      return [el("div", {class: "row"}, el("span", {text: "did"}), eventInput(node, "event"), countEditor(node.count), windowEditor(node, "window")),
        filtersEditor(node)];
    },
    event_time(node) {
      const within = node.operator === "within last" || node.operator === "not within last";
      return [el("div", {class: "row"}, select([["last", "last"], ["first", "first"]], node.occurrence, (v) => { node.occurrence = v; changed(); }, "Occurrence"),
        eventInput(node, "event"), el("span", {text: "was"}),
        select(["within last", "not within last", "before", "after"], node.operator, (v) => {
          node.operator = v;
          if (v.includes("within")) { node.value = 7; node.unit = "days"; } else { node.value = ""; delete node.unit; }
          render(); changed();
        }, "Timing"),
        within ? [field("number", node.value, (v) => { node.value = number(v); changed(); }, "Amount", {min: 1}),
          select(UNITS, node.unit, (v) => { node.unit = v; changed(); }, "Unit")]
          : field("date", node.value, (v) => { node.value = v; changed(); }, "Date")), filtersEditor(node)];
    },
    sequence(node) {
      return [el("div", {class: "row"}, el("span", {text: "did"}), eventInput(node.first, "event", "First event"),
        el("span", {text: "then"}), select([["true", "did NOT do"], ["false", "did"]], String(node.absent), (v) => { node.absent = v === "true"; changed(); }, "Then did or did not"),
        eventInput(node.then, "event", "Second event"), el("span", {text: "within"}),
        field("number", node.within.value, (v) => { node.within.value = number(v); changed(); }, "Within", {min: 1}),
        select(UNITS, node.within.unit, (v) => { node.within.unit = v; changed(); }, "Within unit")),
        el("div", {class: "row"}, el("span", {text: "first event"}), windowEditor(node, "window"))];
    },
    transaction(node) {
      const days = node.measure === "days_since_last";
      const categories = suggestions(field("text", (node.category || []).join(", "), (v) => {
        const list = listValue(v, "string"); if (list.length) node.category = list; else delete node.category; changed();
      }, "Categories"), () => load("catalog/categories/"));
      return [el("div", {class: "row"}, select([["count", "number of purchases"], ["sum", "amount spent"], ["average", "average purchase"],
        ["days_since_last", "days since last purchase"]], node.measure, (v) => {
        node.measure = v; if (v === "days_since_last") delete node.window; else node.window = node.window || {last: 90, unit: "days"};
        render(); changed();
      }, "Purchase measure"), el("span", {text: "in categories"}), categories,
      select(COUNT_OPS.map(([op]) => op), node.operator, (v) => { node.operator = v; changed(); }, "Comparison"),
      field("number", node.value, (v) => { node.value = number(v); changed(); }, "Value", {min: 0, step: "any"}),
      days ? null : windowEditor(node, "window"))];
    },
    trait(node) {
      const traits = el("select", {"aria-label": "Field", on: {change: () => {
        node.field = traits.value; const type = typeOf(node.field); node.operator = OPS_BY_TYPE[type][0];
        node.value = node.operator.includes("within") ? 30 : ""; if (node.operator.includes("within")) node.unit = "days"; else delete node.unit;
        render(); changed();
      }}});
      load("catalog/traits/").then((items) => {
        for (const item of items) traits.append(el("option", {value: item.field, selected: item.field === node.field,
          text: item.label + (item.count ? ` (${item.count.toLocaleString()})` : "")}));
        if (!items.some((item) => item.field === node.field)) traits.append(el("option", {value: node.field, selected: true, text: node.field}));
        const type = typeOf(node.field);
        if (!OPS_BY_TYPE[type].includes(node.operator)) { node.operator = OPS_BY_TYPE[type][0]; render(); }
      });
      const type = typeOf(node.field);
      const operator = select(OPS_BY_TYPE[type] || COMPARE_OPS, node.operator, (v) => {
        node.operator = v;
        if (v.includes("within")) { node.value = 30; node.unit = "days"; } else delete node.unit;
        if (v.startsWith("is ")) delete node.value;
        render(); changed();
      }, "Comparison");
      let value = null;
      if (node.operator.includes("within")) {
        value = [field("number", node.value, (v) => { node.value = number(v); changed(); }, "Amount", {min: 1}),
          select(UNITS, node.unit, (v) => { node.unit = v; changed(); }, "Unit")];
      } else if (!node.operator.startsWith("is ")) {
        const multi = node.operator === "in" || node.operator === "not in";
        const input = field(type === "datetime" ? "date" : "text", Array.isArray(node.value) ? node.value.join(", ") : node.value, (v) => {
          node.value = multi ? listValue(v, type) : typedValue(v, type); changed();
        }, "Value");
        value = suggestions(input, () => load(`catalog/trait-values/?field=${encodeURIComponent(node.field)}`));
      }
      return [el("div", {class: "row"}, traits, operator, value)];
    },
    context(node) {
      const input = field("text", Array.isArray(node.value) ? node.value.join(", ") : node.value, (v) => {
        node.value = node.operator === "in" || node.operator === "not in" ? listValue(v, "string") : v; changed();
      }, "Value");
      return [el("div", {class: "row"}, select([["device_type", "last device type"], ["os", "last OS"], ["browser", "last browser"],
        ["country", "country"], ["city", "city"], ["city_size", "city size (urban / rural)"]], node.field, (v) => {
        node.field = v; node.value = v === "city_size" ? "urban" : ""; render(); changed();
      }, "Context field"), select(["=", "!=", "in", "not in"], node.operator, (v) => { node.operator = v; changed(); }, "Comparison"),
      suggestions(input, () => load(`catalog/context-values/?field=${encodeURIComponent(node.field)}`)))];
    },
    activity(node) {
      const days = el("span", {}, WEEKDAYS.map((day) => el("label", {class: "inline"},
        el("input", {type: "checkbox", checked: (node.weekdays || []).includes(day), "aria-label": day, on: {change: (event) => {
          const set = new Set(node.weekdays || []);
          if (event.target.checked) set.add(day); else set.delete(day);
          node.weekdays = WEEKDAYS.filter((d) => set.has(d)); if (!node.weekdays.length) delete node.weekdays; changed();
        }}}), day)));
      return [el("div", {class: "row"}, el("span", {text: "active"}), select(BUCKETS, typeof node.hours === "string" ? node.hours : "after_work",
        (v) => { node.hours = v; changed(); }, "Hours"), days),
      el("div", {class: "row"}, countEditor(node.count), windowEditor(node, "window"))];
    },
    segment(node) {
      const input = suggestions(field("text", node.segment, (v) => { node.segment = v; changed(); }, "Segment key"), () => load("catalog/segments/"));
      return [el("div", {class: "row"}, select([["in", "is in"], ["not in", "is not in"]], node.operator, (v) => { node.operator = v; changed(); }, "In or not in"),
        el("span", {text: "segment"}), input)];
    },
  };
  EDITORS.consent = function (node) {
    // Purposes come from the consent module (active ones); "not" on the card means "has not granted".
    const purpose = el("select", {"aria-label": "Consent purpose", on: {change: () => { node.purpose = purpose.value; changed(); }}});
    load("catalog/purposes/").then((items) => {
      for (const item of items) purpose.append(el("option", {value: item.value, selected: item.value === node.purpose, text: item.label}));
      if (!items.some((item) => item.value === node.purpose)) purpose.append(el("option", {value: node.purpose, selected: true, text: node.purpose}));
    });
    return [el("div", {class: "row"}, el("span", {text: "has granted consent for"}), purpose)];
  };
  const traitTypes = {};
  load("catalog/traits/").then((items) => { for (const item of items) traitTypes[item.field] = item.type; });
  function typeOf(name) {
    if (traitTypes[name]) return traitTypes[name];
    return name && name.startsWith("traits.") ? "json" : "string";
  }

  // -- cards and groups ---------------------------------------------------------------------
  function card(list, index) {
    const item = list[index];
    const negated = item.type === "not";
    const node = negated ? item.condition : item;
    const isGroup = node.type === "or" || node.type === "and";
    const head = el("div", {class: "head"},
      el("strong", {text: (negated ? "NOT · " : "") + (TYPE_LABELS[node.type] || node.type)}),
      el("span", {}, el("label", {class: "inline"}, el("input", {type: "checkbox", checked: negated, "aria-label": "Negate condition",
        on: {change: (event) => { list[index] = event.target.checked ? {type: "not", condition: node} : node; render(); changed(); }}}), " not"),
      " ", el("button", {type: "button", class: "secondary outline small", text: "Remove", "aria-label": "Remove condition",
        on: {click: () => { list.splice(index, 1); render(); changed(); }}})));
    const body = isGroup ? groupBody(node) : EDITORS[node.type](node);
    return el("div", {class: "condition", "data-type": node.type}, head, body);
  }
  function groupBody(group) {
    const inner = el("div", {class: "group"});
    group.conditions.forEach((_, index) => inner.append(card(group.conditions, index)));
    const type = select(Object.keys(DEFAULTS).filter((key) => key !== "or").map((key) => [key, TYPE_LABELS[key]]), "event", () => {}, "Condition type in group");
    inner.append(el("div", {class: "row"}, select([["or", "any of"], ["and", "all of"]], group.type, (v) => { group.type = v; render(); changed(); }, "Group match"),
      type, el("button", {type: "button", class: "secondary outline small", text: "+ add to group",
        on: {click: () => { group.conditions.push(DEFAULTS[type.value]()); render(); changed(); }}})));
    return inner;
  }
  function render() {
    container.replaceChildren(...root.conditions.map((_, index) => card(root.conditions, index)));
    if (!root.conditions.length) container.append(el("p", {class: "empty", text: "No conditions yet: add one below."}));
    rootMatch.value = root.type;
    document.getElementById("definition-json").textContent = JSON.stringify(definition(), null, 2);
  }
  function definition() {
    return {version: 1, root: root.conditions.length === 1 && root.type === "and" ? root.conditions[0] : root};
  }

  // -- live preview -------------------------------------------------------------------------
  let timer = null;
  let sequence = 0;
  function changed() {
    document.getElementById("definition-json").textContent = JSON.stringify(definition(), null, 2);
    document.getElementById("diff-box").hidden = true;
    clearTimeout(timer);
    timer = setTimeout(preview, 350);
  }
  function isRules() {
    const kind = document.querySelector("input[name=kind]:checked");
    return !kind || kind.value === "rules";
  }
  async function post(path, body, method) {
    const response = await fetch(api + path, {method: method || "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRFToken": csrf}, body: JSON.stringify(body)});
    let data = null;
    try { data = await response.json(); } catch (error) { data = {message: "The server answered without JSON (status " + response.status + ")."}; }
    return {ok: response.ok, status: response.status, data};
  }
  function showProblems(target, data) {
    target.replaceChildren();
    const errors = (data && data.errors && Array.isArray(data.errors)) ? data.errors : [];
    if (errors.length) for (const error of errors) target.append(el("li", {text: `${error.path}: ${error.message}`}));
    else if (data && data.message) target.append(el("li", {text: data.message}));
  }
  async function preview() {
    const size = document.getElementById("preview-size");
    const meta = document.getElementById("preview-meta");
    const problems = document.getElementById("preview-problems");
    const sample = document.getElementById("preview-sample");
    if (!root.conditions.length || !isRules()) {
      size.textContent = "—"; meta.textContent = "Add a condition to see who matches."; sample.hidden = true; problems.replaceChildren();
      document.getElementById("preview-sentence").textContent = "";
      return;
    }
    const mine = ++sequence;
    meta.textContent = "Counting…";
    const result = await post("preview/", {definition: definition(), segment: config.key || undefined});
    if (mine !== sequence) return;
    if (!result.ok) {
      size.textContent = "—"; meta.textContent = "Fix the conditions to see the size."; sample.hidden = true;
      showProblems(problems, result.data);
      return;
    }
    const data = result.data;
    problems.replaceChildren();
    size.textContent = (data.is_estimate ? "≈ " : "") + Number(data.size).toLocaleString();
    const share = data.total_profiles ? (100 * data.size / data.total_profiles).toFixed(1) : "0";
    meta.textContent = `${share}% of ${Number(data.total_profiles).toLocaleString()} profiles` +
      (data.is_estimate ? " · estimate (the exact count took too long)" : "") + ` · ${data.milliseconds} ms`;
    document.getElementById("preview-sentence").textContent = data.sentence;
    const body = sample.querySelector("tbody");
    body.replaceChildren(...data.sample.map((row) => el("tr", {}, el("td", {}, el("code", {text: row.profile_id.slice(0, 8)})),
      el("td", {text: row.country || "—"}), el("td", {text: row.device || "—"}), el("td", {text: (row.last_seen_at || "").slice(0, 10) || "—"}))));
    sample.hidden = !data.sample.length;
  }

  // -- saving -------------------------------------------------------------------------------
  function formData() {
    const scheduleText = document.getElementById("field-schedule").value;
    const data = {
      name: document.getElementById("field-name").value.trim(),
      description: document.getElementById("field-description").value,
      schedule_minutes: scheduleText ? Number(scheduleText) : null,
      is_realtime: document.getElementById("field-realtime").checked,
      exposed_sources: [...document.querySelectorAll("input[name=exposed_sources]:checked")].map((box) => Number(box.value)),
      webhook_url: document.getElementById("field-webhook").value.trim(),
      required_purposes: [...document.querySelectorAll("input[name=required_purposes]:checked")].map((box) => box.value),
    };
    if (config.mode === "create") {
      data.key = document.getElementById("field-key").value.trim();
      data.kind = isRules() ? "rules" : "static";
    }
    if (isRules()) data.definition = definition();
    return data;
  }
  function clearErrors() {
    for (const node of document.querySelectorAll("small.error")) node.textContent = "";
    document.getElementById("form-errors").replaceChildren();
  }
  function showSaveError(data) {
    const target = data && data.field && document.getElementById("error-" + data.field);
    if (target) target.textContent = data.message;
    const list = el("ul");
    showProblems(list, data);
    document.getElementById("form-errors").replaceChildren(el("p", {text: "Not saved:"}), list);
  }
  async function save() {
    clearErrors();
    const data = formData();
    const result = config.mode === "create" ? await post("", data) : await post(`${config.key}/`, data, "PATCH");
    if (!result.ok) { showSaveError(result.data); return; }
    window.location.href = `/segments/${result.data.key}/`;
  }
  async function review() {
    clearErrors();
    const changedDefinition = JSON.stringify(definition()) !== original;
    if (config.mode !== "edit" || !config.live || !changedDefinition) { await save(); return; }
    const box = document.getElementById("diff-box");
    box.hidden = false;
    box.replaceChildren(el("p", {text: "Computing what would change…"}));
    const result = await post(`${config.key}/diff/`, {definition: definition()});
    if (!result.ok) { box.hidden = true; showSaveError(result.data); return; }
    const diff = result.data;
    const samples = (ids) => ids.length ? el("small", {class: "muted"}, " e.g. ", ids.map((id) => el("code", {text: id.slice(0, 8) + " "}))) : null;
    box.replaceChildren(
      el("p", {}, el("strong", {text: "Dry run against current data: "}),
        `${diff.current_size.toLocaleString()} members now → ${diff.size.toLocaleString()} after saving.`),
      el("p", {"data-testid": "diff-entering"}, `${diff.entering.toLocaleString()} would enter`, samples(diff.entering_sample)),
      el("p", {"data-testid": "diff-leaving"}, `${diff.leaving.toLocaleString()} would leave`, samples(diff.leaving_sample)),
      el("div", {class: "toolbar"}, el("button", {type: "button", "data-testid": "confirm-save", text: "Confirm and save", on: {click: save}}),
        el("button", {type: "button", class: "secondary outline", text: "Keep editing", on: {click: () => { box.hidden = true; }}})));
  }

  // -- wiring -------------------------------------------------------------------------------
  document.getElementById("add-condition").addEventListener("click", () => {
    root.conditions.push(DEFAULTS[document.getElementById("add-type").value]());
    render(); changed();
  });
  rootMatch.addEventListener("change", () => { root.type = rootMatch.value; changed(); });
  document.getElementById("segment-form").addEventListener("submit", (event) => { event.preventDefault(); review(); });
  for (const radio of document.querySelectorAll("input[name=kind]")) {
    radio.addEventListener("change", () => { document.getElementById("rules-section").hidden = !isRules(); changed(); });
  }
  const picker = document.getElementById("template-picker");
  if (picker) picker.addEventListener("change", () => {
    window.location.href = picker.value ? `?template=${encodeURIComponent(picker.value)}` : window.location.pathname;
  });
  render();
  if (root.conditions.length) preview();
  document.body.dataset.builderReady = "true";
})();
