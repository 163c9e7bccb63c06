// The live view of a txraft cluster: polls this node's /cluster once a
// second and redraws the member table and the commits-per-second chart.
"use strict";

const POLL_MS = 1000;
const SAMPLES = 60;
const samples = []; // [{time, commit}] of the leader's commit index

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "\u2013" : String(text);
  if (className) td.className = className;
  return td;
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  return seconds < 1 ? "just now" : `${seconds.toFixed(1)} s ago`;
}

function renderMembers(picture) {
  const body = document.querySelector("#members tbody");
  body.replaceChildren();
  for (const member of picture.members) {
    const row = body.insertRow();
    row.dataset.name = member.name;
    row.dataset.role = member.role || "unreachable";
    if (member.name === picture.leader && member.role === "leader") row.classList.add("leader");
    if (!member.reachable) row.classList.add("unreachable");
    cell(row, member.name + (member.name === picture.self ? " (this node)" : ""));
    cell(row, member.address);
    cell(row, member.reachable ? member.role : "unreachable");
    cell(row, member.term, "number");
    cell(row, member.commitIndex, "number");
    cell(row, member.lastApplied, "number");
    cell(row, member.lag, "number");
    const health = cell(row, "");
    const badge = document.createElement("span");
    badge.className = "badge " + (member.healthy ? "healthy" : "unhealthy");
    badge.textContent = member.healthy ? "healthy" : member.reason;
    health.appendChild(badge);
    cell(row, ago(member.lastContact));
  }
  const summary = document.getElementById("summary");
  summary.dataset.leader = picture.leader || "";
  summary.textContent = picture.leader
    ? `Leader: ${picture.leader}, seen from ${picture.self}`
    : `No leader known, seen from ${picture.self}`;
}

function renderChart(picture) {
  if (typeof picture.leaderCommit === "number") {
    samples.push({ time: Date.now() / 1000, commit: picture.leaderCommit });
    if (samples.length > SAMPLES + 1) samples.shift();
  }
  const rates = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = samples[i].time - samples[i - 1].time;
    rates.push(dt > 0 ? Math.max(0, samples[i].commit - samples[i - 1].commit) / dt : 0);
  }
  const chart = document.getElementById("chart");
  chart.replaceChildren();
  const top = Math.max(1, ...rates);
  const width = 600 / SAMPLES;
  rates.forEach((rate, i) => {
    const bar = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    const height = (rate / top) * 116;
    bar.setAttribute("x", String((SAMPLES - rates.length + i) * width));
    bar.setAttribute("y", String(120 - height));
    bar.setAttribute("width", String(width * 0.8));
    bar.setAttribute("height", String(height));
    chart.appendChild(bar);
  });
  const last = rates.length ? rates[rates.length - 1] : 0;
  document.getElementById("rate").textContent = `(now ${last.toFixed(1)}, peak ${top.toFixed(1)})`;
}

async function poll() {
  const updated = document.getElementById("updated");
  try {
    const response = await fetch("cluster", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const picture = await response.json();
    renderMembers(picture);
    renderChart(picture);
    updated.className = "quiet";
    updated.textContent = "Updated " + new Date().toLocaleTimeString();
  } catch (error) {
    updated.className = "error";
    updated.textContent = `Cannot reach this node: ${error.message}; retrying`;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
