// harness view: renders window.HV_DATA (data.js) by URL hash. Data is only ever written with textContent
// (through el()), never as HTML, so a model reply holding markup or script shows as text.
"use strict";
const DATA = window.HV_DATA;
const PAGE_SIZE = 100;
const STATUSES = ["correct", "wrong", "failed", "unjudged"];
const SYMBOL = { correct: "✓ correct", wrong: "✗ wrong", failed: "! failed", unjudged: "? unjudged" };
window.HV_BANKS = {};

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const enc = encodeURIComponent;
const runByKey = Object.fromEntries(DATA.runs.map((run) => [run.key, run]));
const questionIndex = DATA.runs.map((run) => new Map(run.questions.map((q) => [q.id, q])));

function parseHash() {
  const raw = location.hash.replace(/^#/, "");
  const [path, query] = raw.split("?");
  return { parts: (path || "").split("/").map(decodeURIComponent), params: new URLSearchParams(query || "") };
}

function link(text, hash) { return el("a", { href: "#" + hash }, text); }
function status(value) { return el("span", { class: "status " + value, "data-status": value }, SYMBOL[value]); }
function fmt(value) { return value === null || value === undefined ? "-" : typeof value === "object" ? JSON.stringify(value) : String(value); }

function table(columns, rows, emphasized) {
  const em = new Set(emphasized || []);
  return el("table", {},
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c)))),
    el("tbody", {}, rows.map((row, i) => el("tr", { class: em.has(i) ? "em" : null },
      row.map((cell, j) => el("td", { class: j > 0 && !(cell instanceof Node) && /^[\d.\-\[>?]/.test(String(cell)) ? "num" : null },
        cell instanceof Node ? cell : fmt(cell)))))));
}

function reportTable(t) {
  return [el("h2", {}, t.title), table(t.columns, t.rows, t.emphasized), t.notes.map((n) => el("p", { class: "note" }, n))];
}

function keyValues(obj) {
  return el("dl", {}, Object.entries(obj || {}).map(([k, v]) => [el("dt", {}, k), el("dd", {}, fmt(v))]));
}

function usageTable(usage) {
  const stages = Object.entries(usage || {});
  if (!stages.length) return el("p", { class: "note" }, "no LLM usage recorded");
  return table(["stage", "calls", "prompt tok", "completion tok", "latency s", "cost $"],
    stages.map(([s, u]) => [s, u.calls, u.prompt_tokens, u.completion_tokens, u.latency_s, u.cost_usd]));
}

function overview() {
  const out = [el("h1", {}, DATA.runs.length > 1 ? `${DATA.runs.length} runs` : DATA.runs[0].label)];
  DATA.tables.forEach((t) => out.push(reportTable(t)));
  for (const run of DATA.runs) {
    const counts = Object.fromEntries(STATUSES.map((s) => [s, run.questions.filter((q) => q.status === s).length]));
    out.push(el("h2", {}, run.label),
      keyValues({ directory: run.dir, status: run.status, questions: `${run.questions.length}` +
        (run.planned ? ` of ${run.planned} planned` : ""), "status read from": run.metric, ...run.spec }),
      el("p", {}, STATUSES.map((s) => [link(`${SYMBOL[s]}: ${counts[s]}`, `list?run=${run.key}&status=${s}`), "  "])));
    if (run.error) out.push(el("pre", {}, run.error));
    run.tables.forEach((t) => out.push(reportTable(t)));
    if (run.histories.length) {
      out.push(el("h2", {}, "Memory banks"), table(["history", "items", "words", "ingest calls", "error"],
        run.histories.map((sample) => {
          const ingest = ingestOf(run, sample) || {};
          const calls = Object.values(ingest.usage || {}).reduce((n, u) => n + u.calls, 0);
          return [link(sample, `h/${run.key}/${enc(sample)}`), fmt(ingest.items), fmt(ingest.words), calls, fmt(ingest.error)];
        })));
    }
  }
  return out;
}

function matchesText(q, text) {
  return !text || [q.text, q.id, q.answer || "", ...q.gold].join("\n").toLowerCase().includes(text);
}

function filtered(run, params) {
  const type = params.get("type"), want = params.get("status"), text = (params.get("q") || "").toLowerCase();
  return run.questions.filter((q) => (!type || q.type === type) && (!want || q.status === want) && matchesText(q, text));
}

function setParam(params, key, value) {
  const next = new URLSearchParams(params);
  if (value) next.set(key, value); else next.delete(key);
  if (key !== "page") next.delete("page");
  return next;
}

function filterBar(route, params, types) {
  const go = (key) => (event) => { location.hash = `${route}?${setParam(params, key, event.target.value)}`; };
  const select = (key, label, values) => el("label", {}, label + " ",
    el("select", { id: "f-" + key, onchange: go(key) }, el("option", { value: "" }, "all"),
      values.map((v) => { const o = el("option", { value: v }, v); o.selected = params.get(key) === v; return o; })));
  const search = el("input", { type: "search", id: "f-q", placeholder: "search question, answer, gold, id", onchange: go("q") });
  search.value = params.get("q") || "";
  const bar = [select("type", "type", types), select("status", "status", STATUSES), search];
  if (DATA.runs.length > 1 && route === "list") {
    const current = params.get("run") || DATA.runs[0].key;
    bar.unshift(el("label", {}, "run ", el("select", { id: "f-run", onchange: go("run") }, DATA.runs.map((r) => {
      const option = el("option", { value: r.key }, r.label);
      option.selected = r.key === current;
      return option;
    }))));
  }
  return el("div", { class: "filters" }, bar);
}

function pager(route, params, total, noun = "question(s)") {
  const page = Math.max(0, parseInt(params.get("page") || "0", 10) || 0);
  const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
  const to = (p) => `${route}?${setParam(params, "page", String(p))}`;
  return { page, node: el("div", { class: "pager" },
    page > 0 ? link("← previous", to(page - 1)) : null,
    el("span", { id: "count" }, `${total} ${noun}, page ${Math.min(page + 1, pages)} of ${pages}`),
    page + 1 < pages ? link("next →", to(page + 1)) : null) };
}

function questionList(params) {
  const run = runByKey[params.get("run")] || DATA.runs[0];
  const types = [...new Set(run.questions.map((q) => q.type))];
  const rows = filtered(run, params);
  const { page, node } = pager("list", params, rows.length);
  const shown = rows.slice(page * PAGE_SIZE, (page + 1) * PAGE_SIZE);
  return [el("h1", {}, `Questions · ${run.label}`), filterBar("list", params, types), node,
    el("table", { id: "questions" }, el("thead", {}, el("tr", {}, ["status", "type", "question", "answer", "gold"].map((c) => el("th", {}, c)))),
      el("tbody", {}, shown.map((q) => el("tr", { "data-qid": q.id }, el("td", {}, status(q.status)), el("td", {}, q.type),
        el("td", {}, link(q.text, `q/${run.key}/${enc(q.id)}`)), el("td", {}, fmt(q.answer)), el("td", {}, q.gold.join(" | ")))))),
    node.cloneNode(true)];
}

function retrievedList(q) {
  if (q.retrieved === null) return el("p", { class: "note" }, "this system does not retrieve");
  if (!q.retrieved.length) return el("p", { class: "note" }, "nothing retrieved");
  return el("table", { id: "retrieved" }, el("thead", {}, el("tr", {}, ["rank", "evidence", "memory", "source turns", "score"].map((c) => el("th", {}, c)))),
    el("tbody", {}, q.retrieved.map((item, i) => el("tr", { class: "item" + (item.hit.length ? " hit" : ""), "data-hit": item.hit.length ? "1" : "0" },
      el("td", { class: "num" }, i + 1), el("td", {}, item.hit.length ? el("span", { class: "mark" }, "★ " + item.hit.join(", ")) : ""),
      el("td", {}, item.text), el("td", {}, item.sources.join(", ")), el("td", { class: "num" }, item.score === null ? "-" : item.score.toFixed(4))))));
}

function judgeList(q) {
  const metrics = Object.keys(q.scores);
  if (!metrics.length) return el("p", { class: "note" }, "not scored");
  return table(["metric", "score", "details"], metrics.map((m) => [m, fmt(q.scores[m]), keyValues(q.details[m])]));
}

function questionBody(run, q) {
  const hits = new Set((q.retrieved || []).flatMap((i) => i.hit));
  return [
    el("p", {}, status(q.status), " ", q.type, " · ", link("memory bank of " + q.sample, `h/${run.key}/${enc(q.sample.replace(/\//g, "_"))}`)),
    keyValues({ question: q.text, gold: q.gold.join(" | "), evidence: q.evidence.map((e) => e + (hits.has(e) ? " (retrieved)" : "")).join(", ") || "-",
      ...q.metadata }),
    q.error ? [el("h2", {}, "Error"), el("pre", { class: "error" }, q.error)] : null,
    el("h2", {}, "Answer"), el("pre", { class: "answer" }, fmt(q.answer)),
    q.raw !== null && q.raw !== undefined && q.raw !== q.answer ? [el("h2", {}, "Raw reply"), el("pre", { class: "raw" }, fmt(q.raw))] : null,
    el("h2", {}, "Retrieved memories"), retrievedList(q),
    el("h2", {}, "Judges and metrics"), judgeList(q),
    el("h2", {}, "Latency and tokens"), el("p", {}, `answer latency ${fmt(q.latency_s)} s`), usageTable(q.usage),
    Object.keys(q.system_metadata).length ? [el("h2", {}, "System notes"), keyValues(q.system_metadata)] : null,
  ];
}

function questionPage(runKey, id) {
  const run = runByKey[runKey];
  const q = run && questionIndex[DATA.runs.indexOf(run)].get(id);
  if (!q) return el("p", {}, `no question ${id} in run ${runKey}`);
  return [el("h1", {}, `${q.id} · ${run.label}`),
    DATA.runs.length > 1 ? el("p", {}, link("side by side across runs", `x/${enc(id)}`)) : null, questionBody(run, q)];
}

function sideBySide(id) {
  return [el("h1", {}, `${id} across runs`), el("div", { class: "side" }, DATA.runs.map((run, i) => {
    const q = questionIndex[i].get(id);
    return el("section", {}, el("h2", {}, link(run.label, `q/${run.key}/${enc(id)}`)), q ? questionBody(run, q) : el("p", {}, "not in this run"));
  }))];
}

function disagreements(params) {
  const shared = DATA.runs[0].questions.filter((q) => questionIndex.every((index) => index.has(q.id)));
  const types = [...new Set(shared.map((q) => q.type))];
  const differ = params.get("all") !== "1";
  const text = (params.get("q") || "").toLowerCase(), type = params.get("type"), want = params.get("status");
  const rows = shared.filter((q) => {
    const statuses = questionIndex.map((index) => index.get(q.id).status);
    return (!differ || new Set(statuses).size > 1) && (!type || q.type === type) && (!want || statuses.includes(want)) &&
      matchesText(q, text);
  });
  const { page, node } = pager("diff", params, rows.length);
  return [el("h1", {}, differ ? "Questions where the runs disagree" : "All shared questions"),
    el("p", {}, link(differ ? "show all shared questions" : "show disagreements only", `diff?${setParam(params, "all", differ ? "1" : "")}`)),
    filterBar("diff", params, types), node,
    el("table", { id: "questions" }, el("thead", {}, el("tr", {}, ["question", "type", ...DATA.runs.map((r) => r.label)].map((c) => el("th", {}, c)))),
      el("tbody", {}, rows.slice(page * PAGE_SIZE, (page + 1) * PAGE_SIZE).map((q) => el("tr", { "data-qid": q.id },
        el("td", {}, link(q.text, `x/${enc(q.id)}`)), el("td", {}, q.type),
        questionIndex.map((index) => { const other = index.get(q.id); return el("td", {}, status(other.status), el("div", {}, fmt(other.answer))); })))))];
}

function bankPage(runKey, sample, params) {
  const run = runByKey[runKey];
  const number = run ? run.histories.indexOf(sample) : -1;
  if (number < 0) return el("p", {}, `no memory bank of history ${sample} in run ${runKey}`);
  const bank = window.HV_BANKS[`${runKey}/${sample}`];
  if (!bank) {
    const script = el("script", { src: `histories/${runKey}/${number}.js` });
    script.addEventListener("load", render);
    script.addEventListener("error", () => { document.getElementById("app").replaceChildren(el("p", {}, "could not load the memory bank file")); });
    document.body.append(script);
    return el("p", {}, "Loading the memory bank…");
  }
  const ingest = ingestOf(run, sample);
  const { page, node } = pager(`h/${runKey}/${enc(sample)}`, params, bank.length, "memory item(s)");
  const invalid = ingest ? Object.entries(ingest.stats).filter(([k]) => /invalid/i.test(k)) : [];
  return [el("h1", {}, `History ${sample} · ${run.label}`),
    el("h2", {}, "Ingestion"), ingest ? [keyValues({ items: ingest.items, words: ingest.words, error: ingest.error, ...ingest.stats }), usageTable(ingest.usage)]
      : el("p", { class: "note" }, "no ingest record"),
    invalid.length ? el("p", { class: "invalid" }, "invalid replies: " + invalid.map(([k, v]) => `${k}=${v}`).join(", ")) : null,
    el("h2", {}, "Memory bank at the end"), node,
    el("table", { id: "bank" }, el("thead", {}, el("tr", {}, ["id", "memory", "source turns", "history"].map((c) => el("th", {}, c)))),
      el("tbody", {}, bank.slice(page * PAGE_SIZE, (page + 1) * PAGE_SIZE).map(bankRow))),
    node.cloneNode(true)];
}

function bankRow(item) {
  return el("tr", {}, el("td", {}, item.id),
    el("td", {}, item.text, item.speaker ? el("div", { class: "note" }, item.speaker) : null),
    el("td", {}, item.source_turn_ids.join(", ")),
    el("td", {}, item.history.map(eventLine)));
}

function eventLine(ev) {
  const where = [ev.session_id, ev.timestamp, ev.source_turn_ids.join(", ")].filter(Boolean).join(" · ");
  const before = ev.previous_text !== null && ev.previous_text !== undefined;
  return el("div", { class: "event" }, el("span", { class: "op" }, ev.op), " ",
    before ? [el("span", { class: "del" }, ev.previous_text), " → "] : null,
    ev.op === "DELETE" ? el("span", { class: "del" }, ev.text) : ev.text,
    where ? el("span", { class: "note" }, ` (${where})`) : null);
}

// Memory files are named by sample id with "/" made "_" (harness.results.RunDir.write_memory).
function ingestOf(run, bankName) {
  return run.ingests.find((i) => i.sample.replace(/\//g, "_") === bankName) || null;
}

function nav() {
  return [link("Overview", "overview"), " · ", link("Questions", "list"),
    DATA.runs.length > 1 ? [" · ", link("Disagreements", "diff")] : null];
}

function render() {
  const { parts, params } = parseHash();
  const [route, a, b] = parts;
  const pages = {
    list: () => questionList(params), q: () => questionPage(a, b), h: () => bankPage(a, b, params),
    x: () => sideBySide(a), diff: () => disagreements(params), overview,
  };
  const page = (pages[route] || overview)();
  document.getElementById("nav").replaceChildren(el("span", {}, nav()));
  document.getElementById("app").replaceChildren(el("div", {}, page));
  document.body.dataset.route = route || "overview";
  // Milliseconds since navigation when the page was last drawn: what "opens without stalling" is measured by.
  document.body.dataset.renderedAt = String(Math.round(performance.now()));
}

window.addEventListener("hashchange", render);
render();
