// cutover dashboard: hand-written, no library. Reads the admin API with the session cookie,
// follows the event stream (GET /api/v1/events) and draws its charts as SVG. Every text from the
// daemon goes into the page through textContent, never as HTML.
'use strict';

const STEP_EVENTS = ['created', 'healthy', 'switched', 'step', 'step_done', 'paused', 'resumed',
  'promoted', 'approved', 'aborted', 'rolled_back', 'completed', 'failed', 'interrupted',
  'inconclusive', 'suspended', 'test_started', 'test_passed', 'test_failed', 'batch',
  'instance_retired', 'drained', 'saved_late', 'service_down', 'store_lost', 'event'];
// The live version is blue and the new one orange everywhere on the page; others are grey.
const LIVE_COLOR = '#2f6fde', NEW_COLOR = '#e07b00', OTHER_COLORS = ['#98a2b3', '#7a4cc2', '#0e8a8a'];
const ROLES = { viewer: 1, operator: 2, admin: 3 };

const state = {
  session: null, services: [], changes: [], series: {}, es: null, retry: 1000,
  refreshTimer: null, fetchedAt: 0, busy: false, opens: 0,
};

const $ = (id) => document.getElementById(id);

// el('div', {class: 'x'}, child, 'text', ...): a DOM element; strings become text nodes.
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined || k === false) continue;
    e.append(typeof k === 'string' || typeof k === 'number' ? document.createTextNode(String(k)) : k);
  }
  return e;
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, ...kids) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(typeof k === 'string' ? document.createTextNode(k) : k);
  return e;
}

// ------------------------------------------------------------------------------ API

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && state.session && state.session.csrf) headers['X-CSRF-Token'] = state.session.csrf;
  const r = await fetch(path, {
    method, headers, credentials: 'same-origin', cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const type = r.headers.get('Content-Type') || '';
  const data = type.startsWith('application/json') ? await r.json() : await r.text();
  if (!r.ok) {
    if (r.status === 401 && path !== '/api/v1/session') showLogin('Your session has ended; log in again.');
    throw new ApiError(r.status, (data && data.error) || String(data) || r.statusText);
  }
  return data;
}

// ------------------------------------------------------------------------------ login

function showLogin(message) {
  state.session = null;
  closeStream();
  $('app').hidden = true;
  $('logout').hidden = true;
  $('conn').hidden = true;
  $('who').textContent = '';
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('token').focus();
}

async function login(ev) {
  ev.preventDefault();
  const box = $('token');
  $('login-error').textContent = '';
  try {
    state.session = await api('POST', '/api/v1/session', { token: box.value });
    box.value = '';
    startApp();
  } catch (e) {
    $('login-error').textContent = e.status === 401 ? 'Wrong token: ' + e.message : 'Login failed: ' + e.message;
    box.select();
  }
}

async function logout() {
  try { await api('DELETE', '/api/v1/session'); } catch (e) { /* the cookie is gone either way */ }
  showLogin('Logged out.');
}

function may(role) { return state.session && ROLES[state.session.role] >= ROLES[role]; }

function startApp() {
  $('login').hidden = true;
  $('app').hidden = false;
  $('logout').hidden = false;
  $('who').textContent = state.session.name + ' (' + state.session.role + ')';
  openStream();
  refresh();
}

// ------------------------------------------------------------------------------ live data

function closeStream() {
  if (state.es) state.es.close();
  state.es = null;
}

function setConn(text, cls) {
  const c = $('conn');
  c.hidden = false;
  c.textContent = text;
  c.className = 'conn ' + cls;
}

// The event stream says when something happened; the page then reads the state again. The
// browser reconnects by itself after a dropped stream (with Last-Event-ID); when the daemon
// answered with an error instead (a hand-over in progress), EventSource gives up, so the page
// opens a new one, waiting up to 10 s between tries.
function openStream() {
  closeStream();
  const es = new EventSource('/api/v1/events');
  state.es = es;
  es.onopen = () => {
    state.retry = 1000;
    state.opens += 1;
    $('conn').dataset.opens = String(state.opens); // how often the stream (re)opened
    setConn('live', 'live');
    refresh();
  };
  es.onmessage = () => scheduleRefresh();
  for (const t of STEP_EVENTS) es.addEventListener(t, () => scheduleRefresh());
  es.onerror = () => {
    setConn('reconnecting…', 'down');
    if (es.readyState !== EventSource.CLOSED || state.es !== es) return;
    state.es = null;
    setTimeout(async () => {
      if (!state.session) return;
      try { await api('GET', '/api/v1/session'); openStream(); } catch (e) {
        if (e.status !== 401) { state.retry = Math.min(state.retry * 2, 10000); openStreamLater(); }
      }
    }, state.retry);
  };
}

function openStreamLater() {
  setTimeout(() => { if (state.session && !state.es) openStream(); }, state.retry);
}

function scheduleRefresh() {
  if (state.refreshTimer) return;
  state.refreshTimer = setTimeout(() => { state.refreshTimer = null; refresh(); }, 150);
}

async function refresh() {
  if (!state.session || state.busy) return;
  state.busy = true;
  try {
    const [svcs, changes] = await Promise.all([
      api('GET', '/api/v1/services'), api('GET', '/api/v1/changes?limit=20')]);
    state.services = svcs.services || [];
    state.changes = changes.changes || [];
    state.fetchedAt = Date.now();
    await refreshSeries();
    render();
  } catch (e) {
    if (e.status !== 401) note('Cannot read the daemon: ' + e.message, true);
  } finally {
    state.busy = false;
  }
}

async function refreshSeries() {
  const got = await Promise.all(state.services.map((s) =>
    api('GET', '/api/v1/services/' + encodeURIComponent(s.name) + '/series').catch(() => null)));
  state.services.forEach((s, i) => { if (got[i]) state.series[s.name] = got[i]; });
}

function note(text, bad) {
  const n = $('notice');
  n.hidden = !text;
  n.textContent = text || '';
  n.className = 'notice' + (bad ? ' bad' : '');
}

// ------------------------------------------------------------------------------ actions

function confirmDialog(text) {
  return new Promise((resolve) => {
    const d = $('confirm');
    $('confirm-text').textContent = text;
    d.returnValue = '';
    d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
    d.showModal();
  });
}

// Acts on what the person saw: the step (or live version) shown goes with the action, and the
// daemon answers 409 when the change has moved on meanwhile.
async function act(label, path, body, confirmText) {
  if (confirmText && !(await confirmDialog(confirmText))) return;
  try {
    const ch = await api('POST', path, body);
    const evs = ch.events || [];
    note(label + ': ' + (evs.length ? evs[evs.length - 1].message : ch.message || 'done'));
  } catch (e) {
    note(label + ' was not done: ' + e.message, true);
  }
  refresh();
}

function changeActions(s, ch) {
  const p = ch.progress || {};
  const st = p.state || (ch.state === 'running' ? 'health' : ch.state);
  const base = '/api/v1/changes/' + ch.id + '/';
  const exp = p.step ? { expect_step: p.step } : {};
  const me = state.session.name;
  const canApprove = approvalFor(ch, me) !== null;
  const btn = (name, enabled, fn, cls) => el('button', {
    type: 'button', class: cls, disabled: !enabled, onclick: fn,
    title: enabled ? null : 'not possible in state ' + st,
  }, name);
  return el('div', { class: 'actions' },
    btn('Promote', (st === 'running' || st === 'paused') && !p.approval,
      () => act('Promote', base + 'promote', exp), 'primary'),
    btn('Pause', st === 'running' || st === 'health', () => act('Pause', base + 'pause', exp)),
    btn('Resume', st === 'paused' || st === 'holding', () => act('Resume', base + 'resume', exp)),
    btn('Approve', canApprove, () => act('Approve', base + 'approve', exp)),
    btn('Abort', true, () => act('Abort', base + 'abort', exp,
      `Abort change ${ch.id} of ${s.name}? Traffic goes back to ${ch.from || 'the live version'} at once.`), 'danger'));
}

// The approval step of ch that me may give now, or null.
function approvalFor(ch, me) {
  const p = ch.progress;
  if (!p || !p.approval || ch.state !== 'running') return null;
  const a = p.approval;
  if (!a.approvers.includes(me)) return null;
  if ((p.approvals || []).some((x) => String(x) === me)) return null;
  if (!a.allow_self && ch.actor === me) return null;
  return a;
}

// ------------------------------------------------------------------------------ rendering

function render() {
  renderWaiting();
  const box = $('services');
  box.replaceChildren(...state.services.map(renderService));
  renderHistory();
}

function renderWaiting() {
  const items = [];
  if (may('operator')) {
    for (const s of state.services) {
      const ch = s.change;
      if (!ch || !approvalFor(ch, state.session.name)) continue;
      const p = ch.progress;
      items.push(el('li', {},
        `${s.name}: change ${ch.id} (${ch.from} → ${ch.to}) waits at step ${p.step} of ${p.steps}, ` +
        `${p.step_description} (${(p.approvals || []).length} of ${p.approval.count} given)`,
        el('button', { type: 'button', class: 'primary', onclick: () =>
          act('Approve', '/api/v1/changes/' + ch.id + '/approve', { expect_step: p.step }) }, 'Approve')));
    }
  }
  $('waiting').hidden = items.length === 0;
  $('waiting-list').replaceChildren(...items);
}

function fmtMs(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m ${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

function renderService(s) {
  const ch = s.change && s.change.state === 'running' ? s.change : null;
  const p = ch && ch.progress;
  const live = s.live ? s.live.name : 'none';
  const share = ch ? (p ? p.weight : 0) : 0;
  const state_ = s.down ? 'down' : ch ? (p ? p.state : 'health') : 'idle';
  const head = el('div', { class: 'svc-head' },
    el('h2', {}, s.name),
    el('span', {}, 'live ', el('span', { class: 'ver live' }, live)),
    ch ? el('span', {}, 'new ', el('span', { class: 'ver new' }, ch.to)) : null,
    ch ? el('span', { class: 'share', title: 'the new version\'s share of the traffic' }, share + '%') : null,
    el('span', { class: 'badge ' + state_ }, state_),
    el('span', { class: 'muted' }, s.listen + ' · ' + s.protocol));
  const kids = [head];
  if (s.down) kids.push(el('p', { class: 'error' }, s.down));
  if (s.store_problem) kids.push(el('p', { class: 'error' }, s.store_problem));
  if (ch) {
    // A baseline (fresh instances of the live version) takes its share out of the live one's.
    const b = p && p.baseline;
    const bshare = b ? b.share_percent : 0;
    const split = el('div', {
      class: 'split',
      title: `${live} ${100 - share - bshare}%` + (b ? ` · ${b.name} baseline ${bshare}%` : '') + ` · ${ch.to} ${share}%`,
    }, el('div', { class: 'live' }), el('div', { class: 'baseline' }), el('div', { class: 'new' }));
    split.children[0].style.width = (100 - share - bshare) + '%';
    split.children[1].style.width = bshare + '%';
    split.children[2].style.width = share + '%';
    kids.push(split);
    if (b) {
      const healthy = (b.targets || []).filter((t) => t.healthy).length;
      kids.push(el('p', { class: 'muted baseline-note' },
        `baseline: ${bshare}% to fresh instances of ${b.name} (${(b.targets || []).length}, ` +
        `${healthy} healthy), what ${ch.to}'s p99 is compared with`));
    }
    kids.push(el('p', { class: 'muted' },
      `change ${ch.id} by ${ch.actor || '?'}` + (ch.reason ? ` — ${ch.reason}` : '') +
      (p ? ` · step ${p.step} of ${p.steps}: ${p.step_description}` : ' · waiting for the new version to be healthy') +
      (p && p.step_remaining_ms !== undefined ? ` · ${fmtMs(p.step_remaining_ms - (Date.now() - state.fetchedAt))} left` : '') +
      (p && p.hold_reason ? ` · holding: ${p.hold_reason}` : '')));
    if (p) kids.push(renderTimeline(ch, p));
    if (p && p.last_analysis) kids.push(renderGate(p.last_analysis));
    if (may('operator')) kids.push(changeActions(s, ch));
  } else if (may('operator')) {
    const prev = s.previous ? s.previous.name : null;
    kids.push(el('div', { class: 'actions' },
      el('button', { type: 'button', class: 'danger', disabled: !prev,
        title: prev ? null : 'no previous version to roll back to',
        onclick: () => act('Rollback', '/api/v1/services/' + encodeURIComponent(s.name) + '/rollback',
          { expect_live: live }, `Roll ${s.name} back from ${live} to ${prev}? Traffic moves at once.`) },
      'Rollback')));
  }
  if (!may('operator')) kids.push(el('p', { class: 'muted' }, 'Read-only: your role is ' + state.session.role + '.'));
  kids.push(renderCharts(s));
  return el('section', { class: 'svc', 'data-service': s.name }, kids);
}

function renderTimeline(ch, p) {
  const audit = ch.detail && ch.detail.audit;
  const names = (audit && audit.plan && audit.plan.steps) || [];
  const done = (ch.detail && ch.detail.steps) || [];
  const n = p.steps || names.length;
  const items = [];
  for (let i = 0; i < n; i++) {
    const rec = done.find((r) => r.index === i);
    const cur = i === p.step - 1;
    const cls = cur ? 'current' : rec && rec.outcome === 'failed' ? 'failed' : rec && rec.ended ? 'done' : '';
    const info = [];
    if (cur) info.push(p.state);
    else if (rec && rec.outcome) info.push(rec.outcome);
    if (rec && rec.verdict) info.push(rec.verdict.length > 90 ? rec.verdict.slice(0, 88) + '…' : rec.verdict);
    if (cur && p.approval) {
      const got = (p.approvals || []).map((x) => x.by || x.actor || x.name || x);
      info.push(`approvals ${got.length} of ${p.approval.count}` + (got.length ? ` (${got.join(', ')})` : '') +
        `; approvers: ${p.approval.approvers.join(', ')}`);
    }
    items.push(el('li', { class: cls, title: rec && rec.verdict ? rec.verdict : null },
      el('div', { class: 'n' }, 'step ' + (i + 1)),
      el('div', { class: 'what' }, names[i] || (cur ? p.step_description : '')),
      el('div', { class: 'info' }, info.join(' · '))));
  }
  return el('ol', { class: 'timeline', 'aria-label': 'plan ' + p.plan }, items);
}

function renderGate(g) {
  return el('p', { class: 'gate' }, 'Last gate: ', el('span', { class: g.result }, g.result),
    ` (${g.test}) ${g.detail || ''} · canary ${g.canary_requests} req, ${(100 * g.canary_error_rate).toFixed(2)}% errors, ` +
    `p99 ${g.canary_p99_ms.toFixed(1)} ms · ${g.compared_with || 'stable'} ${g.stable_requests} req, ${(100 * g.stable_error_rate).toFixed(2)}% errors, ` +
    `p99 ${g.stable_p99_ms.toFixed(1)} ms`);
}

// ------------------------------------------------------------------------------ charts

function renderCharts(s) {
  const data = state.series[s.name];
  const live = s.live ? s.live.name : null;
  const next = s.change && s.change.state === 'running' ? s.change.to : null;
  let other = 0;
  const versions = ((data && data.versions) || []).map((v) => ({
    ...v, every_s: data.every_s, color: v.version === live ? LIVE_COLOR : v.version === next ? NEW_COLOR : OTHER_COLORS[other++ % OTHER_COLORS.length],
  }));
  const now = Date.now() / 1000;
  const from = now - ((data && data.window_s) || 900);
  const legend = el('div', { class: 'legend' }, versions.map((v) =>
    el('span', {}, swatch(v.color), v.version + (v.version === live ? ' (live)' : v.version === next ? ' (new)' : ''))));
  const wrap = el('div', { class: 'charts' },
    chart('Requests / s', versions, 1, from, now, (x) => x.toFixed(x < 10 ? 1 : 0)),
    chart('Errors (5xx, % of requests)', versions, 2, from, now, (x) => x.toFixed(1) + '%'),
    chart('p99 latency (ms)', versions, 3, from, now, (x) => x.toFixed(x < 10 ? 1 : 0)));
  return el('div', {}, el('h3', { class: 'muted' }, 'Last 15 minutes'), legend, wrap);
}

function swatch(color) {
  const e = el('span', { class: 'sw' });
  e.style.background = color;
  return e;
}

// One SVG line chart: column k of each version's points [t, rps, error_pct, p99_ms].
function chart(title, versions, k, from, to, fmt) {
  const W = 360, H = 140, L = 40, R = 6, T = 8, B = 18;
  let max = 0;
  for (const v of versions) for (const pt of v.points) if (pt[0] >= from) max = Math.max(max, pt[k]);
  max = max > 0 ? niceCeil(max) : 1;
  const x = (t) => L + ((t - from) / (to - from)) * (W - L - R);
  const y = (val) => T + (1 - val / max) * (H - T - B);
  const g = svg('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': title });
  for (const f of [0, 0.5, 1]) {
    g.append(svg('line', { class: 'grid', x1: L, x2: W - R, y1: y(max * f), y2: y(max * f) }));
    g.append(svg('text', { x: L - 4, y: y(max * f) + 3, 'text-anchor': 'end' }, fmt(max * f)));
  }
  g.append(svg('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }));
  g.append(svg('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
  for (const m of [15, 10, 5, 0]) {
    g.append(svg('text', { x: x(to - m * 60), y: H - 5, 'text-anchor': m === 15 ? 'start' : m === 0 ? 'end' : 'middle' },
      m === 0 ? 'now' : `-${m}m`));
  }
  versions.forEach((v) => {
    const pts = v.points.filter((pt) => pt[0] >= from);
    if (pts.length === 0) return;
    // A gap (the daemon was down, or the version got no samples) breaks the line: drawing
    // across it would invent figures for a time nobody measured.
    const gap = 3 * (v.every_s || 2);
    const d = pts.map((pt, j) => `${j && pt[0] - pts[j - 1][0] <= gap ? 'L' : 'M'}${x(pt[0]).toFixed(1)},${y(pt[k]).toFixed(1)}`).join(' ');
    g.append(svg('path', { class: 'line', d, stroke: v.color }));
    const last = pts[pts.length - 1]; // a line of one point would not show: mark the latest
    g.append(svg('circle', { cx: x(last[0]).toFixed(1), cy: y(last[k]).toFixed(1), r: 2.5, fill: v.color }));
  });
  if (versions.every((v) => v.points.length === 0)) {
    g.append(svg('text', { x: (L + W) / 2, y: H / 2, 'text-anchor': 'middle' }, 'no samples yet'));
  }
  return el('figure', { class: 'chart' }, el('h3', {}, title), g);
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// ------------------------------------------------------------------------------ history

function renderHistory() {
  const rows = state.changes.map((c) => el('tr', {},
    el('td', {}, String(c.id)), el('td', {}, c.service), el('td', {}, `${c.from || '—'} → ${c.to}`),
    el('td', {}, c.plan || 'instant'), el('td', {}, c.state), el('td', {}, c.actor || ''),
    el('td', {}, (c.created || '').replace('T', ' ').replace(/\.\d+Z$/, 'Z')),
    el('td', {}, c.duration_ms != null ? fmtMs(c.duration_ms) : '…'),
    el('td', {}, el('button', { type: 'button', onclick: () => showReport(c.id) }, 'Report'))));
  $('history').replaceChildren(...rows);
}

async function showReport(id) {
  const box = $('report');
  try {
    const md = await api('GET', '/api/v1/changes/' + id + '/report?format=md');
    box.replaceChildren(el('button', { type: 'button', onclick: () => { box.hidden = true; } }, 'Close report'),
      ...renderMarkdown(md));
    box.hidden = false;
    box.scrollIntoView({ behavior: 'smooth' });
  } catch (e) {
    note('Cannot read the report: ' + e.message, true);
  }
}

// The report's Markdown, as DOM: headings, tables, lists, code blocks and paragraphs. The report
// escapes \ | ` * _ [ ] with a backslash and < > & as entities; they are undone here and the text
// is set with textContent, so nothing in a report can become markup.
function unescapeMd(s) {
  return s.replace(/(?<!\\)[*`]/g, '') // emphasis and code marks, not escaped ones
    .replace(/\\(.)/g, '$1').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
}

function splitRow(line) {
  const cells = [];
  let cur = '';
  for (let i = 0; i < line.length; i++) {
    if (line[i] === '\\' && i + 1 < line.length) { cur += line[i] + line[i + 1]; i++; continue; }
    if (line[i] === '|') { cells.push(cur); cur = ''; continue; }
    cur += line[i];
  }
  cells.push(cur);
  return cells.slice(1, -1).map((c) => unescapeMd(c.trim()));
}

function renderMarkdown(md) {
  const out = [];
  const lines = md.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i];
    if (l.startsWith('```')) {
      const code = [];
      for (i++; i < lines.length && !lines[i].startsWith('```'); i++) code.push(lines[i]);
      out.push(el('pre', {}, code.join('\n')));
    } else if (/^#{1,6} /.test(l)) {
      const level = Math.min(6, l.indexOf(' ') + 2);
      out.push(el('h' + level, {}, unescapeMd(l.replace(/^#+ /, ''))));
    } else if (l.startsWith('|')) {
      const table = el('table');
      let head = true;
      for (; i < lines.length && lines[i].startsWith('|'); i++) {
        if (/^\|[\s:|-]+\|$/.test(lines[i])) continue;
        const cells = splitRow(lines[i]);
        table.append(el('tr', {}, cells.map((c) => el(head ? 'th' : 'td', {}, c))));
        head = false;
      }
      i--;
      out.push(table);
    } else if (/^\s*[-*] /.test(l)) {
      const ul = el('ul');
      for (; i < lines.length && /^\s*[-*] /.test(lines[i]); i++) ul.append(el('li', {}, unescapeMd(lines[i].replace(/^\s*[-*] /, ''))));
      i--;
      out.push(ul);
    } else if (l.trim() !== '') {
      out.push(el('p', {}, unescapeMd(l)));
    }
  }
  return out;
}

// ------------------------------------------------------------------------------ start

async function boot() {
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', logout);
  try {
    state.session = await api('GET', '/api/v1/session');
    startApp();
  } catch (e) {
    showLogin('');
  }
  // The charts move on and the time left counts down between events.
  setInterval(() => { if (state.session && !document.hidden) refresh(); }, 4000);
}

document.addEventListener('DOMContentLoaded', boot);
