// iotseal gateway live dashboard. Plain JS, no library: charts are inline SVG built with
// DOM calls. Every string from the gateway (device ids are chosen by whoever registers a
// device) goes through textContent or an SVG attribute, never through HTML parsing.
'use strict';

(function () {
  const SVGNS = 'http://www.w3.org/2000/svg';
  const body = document.body;

  // The test and the curious can see whether the CSP blocked anything.
  document.addEventListener('securitypolicyviolation', function () {
    body.dataset.cspViolations = String(Number(body.dataset.cspViolations || 0) + 1);
  });

  const UNITS = {
    temperature: '°C', humidity: '%', pressure: 'hPa', latitude: '°', longitude: '°',
    accel_x: 'm/s²', accel_y: 'm/s²', accel_z: 'm/s²', heart_rate: 'bpm', power: 'W',
    energy: 'Wh', battery: '%',
  };
  const HOT_MS = 15000;

  function $(id) { return document.getElementById(id); }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVGNS, tag);
    for (const k of Object.keys(attrs || {})) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function clear(n) { while (n.firstChild) n.removeChild(n.firstChild); }

  function fmtInt(n) { return Math.round(n).toLocaleString('en-US'); }

  function fmtNum(x) {
    if (x === null || x === undefined || !isFinite(x)) return '–';
    if (x === 0) return '0';
    const a = Math.abs(x);
    if (a >= 1000) return fmtInt(x);
    if (a >= 100) return x.toFixed(0);
    if (a >= 10) return x.toFixed(1);
    return x.toFixed(2);
  }

  function fmtMs(x) {
    if (x === null || x === undefined) return '–';
    if (x >= 1000) return (x / 1000).toFixed(2) + ' s';
    if (x >= 10) return x.toFixed(0) + ' ms';
    if (x >= 1) return x.toFixed(1) + ' ms';
    return x.toFixed(2) + ' ms';
  }

  // "3.6 · 24 ms" (one unit when both are in milliseconds).
  function fmtPair(a, b) {
    const fa = fmtMs(a), fb = fmtMs(b);
    if (fa.endsWith(' ms') && fb.endsWith(' ms')) return fa.slice(0, -3) + ' · ' + fb;
    return fa + ' · ' + fb;
  }

  function fmtAgo(ms) {
    if (ms < 1500) return 'just now';
    const s = Math.round(ms / 1000);
    if (s < 120) return s + ' s ago';
    const m = Math.round(s / 60);
    if (m < 120) return m + ' min ago';
    return Math.round(m / 60) + ' h ago';
  }

  function set(id, text, value) {
    const e = $(id);
    e.textContent = text;
    if (value !== undefined) e.dataset.value = String(value);
  }

  // Axis ticks: `n` steps of 1, 2, 2.5 or 5 times a power of ten covering [0, x].
  function niceTicks(x, n) {
    if (!(x > 0)) x = 1;
    const raw = x / n;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    let step = 10 * p;
    for (const m of [1, 2, 2.5, 5]) if (m * p >= raw) { step = m * p; break; }
    const ticks = [];
    for (let v = 0; v < x + step / 2; v += step) ticks.push(v);
    if (ticks.length < 2) ticks.push(step);
    return ticks;
  }

  function fmtTick(v) { return Number(v.toPrecision(3)).toLocaleString('en-US'); }

  // ---------------------------------------------------------------------------------
  // Throughput: readings/s (area) and refusals/s (line) over the last two minutes.

  function drawRate(snap) {
    const root = $('rate-chart');
    clear(root);
    const W = 640, H = 190, L = 46, R = 12, T = 10, B = 26;
    const pw = W - L - R, ph = H - T - B;
    const span = 120000, t1 = snap.t_ms, t0 = t1 - span;
    const pts = snap.rate_history.filter(function (p) { return p[0] >= t0; });
    let top = 0;
    for (const p of pts) top = Math.max(top, p[1], p[2]);
    const ticks = niceTicks(top * 1.05, 4);
    const ymax = ticks[ticks.length - 1];
    const x = function (t) { return L + ((t - t0) / span) * pw; };
    const y = function (v) { return T + ph - (v / ymax) * ph; };
    for (const v of ticks) {
      const yy = y(v);
      root.appendChild(svg('line', { x1: L, x2: W - R, y1: yy, y2: yy, class: 'grid' }));
      root.appendChild(svg('text', { x: L - 6, y: yy + 4, class: 'tick', 'text-anchor': 'end' }, fmtTick(v)));
    }
    for (const [t, label] of [[t0, '−2 min'], [t0 + span / 2, '−1 min'], [t1, 'now']]) {
      const anchor = t === t0 ? 'start' : t === t1 ? 'end' : 'middle';
      root.appendChild(svg('text', { x: x(t), y: H - 8, class: 'tick', 'text-anchor': anchor }, label));
    }
    root.appendChild(svg('text', { x: 12, y: T + ph / 2, class: 'axis', transform: 'rotate(-90 12 ' + (T + ph / 2) + ')', 'text-anchor': 'middle' }, 'per second'));
    if (pts.length < 2) {
      root.appendChild(svg('text', { x: L + pw / 2, y: T + ph / 2, class: 'empty', 'text-anchor': 'middle' }, 'collecting…'));
      return;
    }
    const line = function (k) {
      return pts.map(function (p, i) {
        return (i ? 'L' : 'M') + x(p[0]).toFixed(1) + ' ' + y(p[k]).toFixed(1);
      }).join(' ');
    };
    const area = line(1) + ' L' + x(pts[pts.length - 1][0]).toFixed(1) + ' ' + y(0) +
      ' L' + x(pts[0][0]).toFixed(1) + ' ' + y(0) + ' Z';
    root.appendChild(svg('path', { d: area, class: 'area readings' }));
    root.appendChild(svg('path', { d: line(1), class: 'line readings' }));
    root.appendChild(svg('path', { d: line(2), class: 'line refusals' }));
    const last = pts[pts.length - 1];
    root.appendChild(svg('circle', { cx: x(last[0]), cy: y(last[1]), r: 3, class: 'dot-readings' }));
  }

  // ---------------------------------------------------------------------------------
  // Ack latency: the storage commit histogram over the window.

  function drawLatency(lat) {
    const root = $('latency-chart');
    clear(root);
    const W = 420, H = 190, L = 40, R = 8, T = 10, B = 34;
    const pw = W - L - R, ph = H - T - B;
    const bs = lat.buckets;
    // Show the buckets from the first to the last non-empty one (at least six).
    let lo = bs.findIndex(function (b) { return b.n > 0; });
    let hi = bs.length - 1;
    while (hi > 0 && bs[hi].n === 0) hi--;
    if (lo < 0) { lo = 0; hi = 5; }
    while (hi - lo < 5 && hi < bs.length - 1) hi++;
    while (hi - lo < 5 && lo > 0) lo--;
    const shown = bs.slice(lo, hi + 1);
    let top = 0;
    for (const b of shown) top = Math.max(top, b.n);
    // Counts are whole numbers: integer steps.
    const ticks = niceTicks(Math.max(top, 2), 3).filter(function (v, i, a) {
      return Number.isInteger(v) || i === a.length - 1;
    });
    const nmax = ticks[ticks.length - 1];
    const bw = pw / shown.length;
    for (const v of ticks) {
      const yy = T + ph - (v / nmax) * ph;
      root.appendChild(svg('line', { x1: L, x2: W - R, y1: yy, y2: yy, class: 'grid' }));
      root.appendChild(svg('text', { x: L - 5, y: yy + 4, class: 'tick', 'text-anchor': 'end' }, fmtTick(v)));
    }
    shown.forEach(function (b, i) {
      const h = (b.n / nmax) * ph;
      const rect = svg('rect', { x: L + i * bw + 2, y: T + ph - h, width: Math.max(bw - 4, 1), height: h, class: 'bar latency' });
      rect.appendChild(svg('title', {}, (b.le_ms === null ? 'over ' + fmtMs(bs[bs.length - 2].le_ms) : '≤ ' + fmtMs(b.le_ms)) + ': ' + fmtInt(b.n) + ' commits'));
      root.appendChild(rect);
      const label = b.le_ms === null ? '+∞' : '≤' + (b.le_ms >= 1 ? b.le_ms : b.le_ms.toString());
      root.appendChild(svg('text', { x: L + i * bw + bw / 2, y: T + ph + 14, class: 'tick', 'text-anchor': 'middle' }, label));
    });
    root.appendChild(svg('text', { x: L + pw / 2, y: H - 3, class: 'axis', 'text-anchor': 'middle' }, 'commit time, ms (bucket upper bound)'));
    root.appendChild(svg('text', { x: 11, y: T + ph / 2, class: 'axis', transform: 'rotate(-90 11 ' + (T + ph / 2) + ')', 'text-anchor': 'middle' }, 'commits'));
    set('latency-window', lat.window_s ? 'last ' + lat.window_s + ' s' : 'since start');
    set('latency-legend', 'p50 ' + fmtMs(lat.p50_ms) + ' · p90 ' + fmtMs(lat.p90_ms) + ' · p99 ' +
      fmtMs(lat.p99_ms) + ' · mean ' + fmtMs(lat.mean_ms) + ' · ' + fmtInt(lat.count) + ' commits');
  }

  // ---------------------------------------------------------------------------------
  // Horizontal bar lists (refusals by reason, handshakes by suite).

  const lastRefusals = new Map();
  const hotUntil = new Map();
  const hotDelta = new Map();

  function bars(container, items, opts) {
    clear(container);
    if (items.length === 0) {
      container.appendChild(el('div', 'empty', opts.empty));
      return;
    }
    let max = 0;
    for (const it of items) max = Math.max(max, it.count);
    for (const it of items) {
      const row = el('div', 'bar-row' + (it.hot ? ' hot' : ''));
      row.dataset.key = it.label;
      row.appendChild(el('span', 'bar-label', it.label));
      const s = svg('svg', { viewBox: '0 0 100 10', preserveAspectRatio: 'none', class: 'bar-svg' });
      s.appendChild(svg('rect', { x: 0, y: 0, width: 100, height: 10, class: 'bar-bg' }));
      s.appendChild(svg('rect', { x: 0, y: 0, width: Math.max((it.count / max) * 100, 0.5), height: 10, class: 'bar ' + opts.cls }));
      row.appendChild(s);
      const c = el('span', 'bar-count', fmtInt(it.count));
      c.dataset.value = String(it.count);
      row.appendChild(c);
      row.appendChild(el('span', 'bar-delta', it.delta ? '+' + fmtInt(it.delta) : ''));
      container.appendChild(row);
    }
  }

  function drawRefusals(snap, now) {
    const items = [];
    for (const r of snap.refusals) {
      const prev = lastRefusals.get(r.reason);
      if (prev !== undefined && r.count > prev) {
        // Increases within the hot period add up: "+N in the last seconds".
        const wasHot = (hotUntil.get(r.reason) || 0) > now;
        hotDelta.set(r.reason, (wasHot ? hotDelta.get(r.reason) || 0 : 0) + r.count - prev);
        hotUntil.set(r.reason, now + HOT_MS);
      }
      lastRefusals.set(r.reason, r.count);
      if (r.count === 0) continue;
      const hot = (hotUntil.get(r.reason) || 0) > now;
      if (!hot) hotDelta.delete(r.reason);
      items.push({ label: r.reason, count: r.count, hot: hot, delta: hot ? hotDelta.get(r.reason) : 0 });
    }
    items.sort(function (a, b) { return b.count - a.count || a.label.localeCompare(b.label); });
    bars($('refusals'), items, { cls: 'refusal', empty: 'No refusals yet.' });
    const anyHot = items.some(function (i) { return i.hot; });
    $('refusal-tile').classList.toggle('alarm', anyHot);
  }

  // ---------------------------------------------------------------------------------
  // Devices: the latest readings of each, with a sparkline per sensor.

  function sparkline(values) {
    const W = 120, H = 28;
    const s = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, class: 'spark-svg', preserveAspectRatio: 'none' });
    let min = Infinity, max = -Infinity;
    for (const v of values) { min = Math.min(min, v); max = Math.max(max, v); }
    const span = max - min;
    const n = values.length;
    const x = function (i) { return n > 1 ? (i / (n - 1)) * (W - 4) + 2 : W / 2; };
    const y = function (v) { return span > 0 ? H - 3 - ((v - min) / span) * (H - 6) : H / 2; };
    const d = values.map(function (v, i) {
      return (i ? 'L' : 'M') + x(i).toFixed(1) + ' ' + y(v).toFixed(1);
    }).join(' ');
    s.appendChild(svg('path', { d: d, class: 'spark' }));
    s.appendChild(svg('circle', { cx: x(n - 1), cy: y(values[n - 1]), r: 2, class: 'spark-dot' }));
    return s;
  }

  function drawDevices(snap) {
    const root = $('devices');
    clear(root);
    const list = snap.device_list;
    set('devices-note', list.length === 0 ? 'no readings yet' :
      'latest readings of the ' + list.length + ' most recently active');
    for (const d of list) {
      const card = el('div', 'card' + (d.sessions > 0 ? ' online' : '') + (d.revoked ? ' revoked' : ''));
      const head = el('div', 'card-head');
      head.appendChild(el('span', 'dot' + (d.sessions > 0 ? ' on' : '')));
      const id = el('span', 'dev-id', d.id);
      id.title = d.id;
      head.appendChild(id);
      head.appendChild(el('span', 'alg', d.alg));
      card.appendChild(head);
      const meta = d.revoked ? 'revoked' :
        (d.sessions > 0 ? 'online' : 'offline') + ' · ' + fmtInt(d.readings) + ' readings · ' +
        fmtAgo(Math.max(0, snap.t_ms - d.last_ms));
      card.appendChild(el('div', 'card-meta', meta));
      for (const s of d.sensors) {
        const row = el('div', 'sensor');
        row.appendChild(el('span', 'sname', s.name.replace(/_/g, ' ')));
        row.appendChild(sparkline(s.values));
        const unit = UNITS[s.name] || '';
        row.appendChild(el('span', 'sval', fmtNum(s.last) + (unit ? ' ' + unit : '')));
        card.appendChild(row);
      }
      root.appendChild(card);
    }
  }

  // "0-5, 9, 12-13": partition numbers as ranges.
  function fmtRanges(ps) {
    const out = [];
    let i = 0;
    while (i < ps.length) {
      let j = i;
      while (j + 1 < ps.length && ps[j + 1] === ps[j] + 1) j++;
      out.push(j > i ? ps[i] + '-' + ps[j] : String(ps[i]));
      i = j + 1;
    }
    return out.join(', ');
  }

  // Cluster mode: one row per node this gateway knows (empty list: a single gateway).
  function drawNodes(snap) {
    const nodes = snap.nodes || [];
    const panel = $('nodes-panel');
    panel.hidden = nodes.length === 0;
    const root = $('nodes');
    clear(root);
    const alive = nodes.filter(function (n) { return n.alive; }).length;
    set('nodes-note', alive + ' of ' + nodes.length + ' alive', alive);
    for (const n of nodes) {
      const tr = el('tr', 'node' + (n.alive ? ' alive' : ' dead') + (n.this_node ? ' self' : ''));
      tr.dataset.node = n.node;
      const name = el('td', 'node-name');
      name.appendChild(el('span', 'dot' + (n.alive ? ' on' : '')));
      name.appendChild(el('span', null, n.node));
      if (n.this_node) name.appendChild(el('span', 'muted', ' (this node)'));
      tr.appendChild(name);
      tr.appendChild(el('td', 'mono', n.address || '–'));
      const owned = el('td', 'num', String(n.owned.length));
      owned.title = fmtRanges(n.owned);
      owned.appendChild(el('span', 'muted', n.owned.length ? ' · ' + fmtRanges(n.owned) : ''));
      tr.appendChild(owned);
      tr.appendChild(el('td', 'num', fmtAgo(Math.max(0, snap.t_ms - n.last_heartbeat_ms))));
      tr.appendChild(el('td', 'num', fmtInt(n.forwarded_out) + ' · ' + fmtInt(n.forwarded_in)));
      tr.appendChild(el('td', n.alive ? 'ok' : 'bad', n.alive ? 'alive' : 'not answering'));
      root.appendChild(tr);
    }
  }

  // ---------------------------------------------------------------------------------

  let lastUpdate = 0;

  function render(snap) {
    const now = Date.now();
    const dv = snap.devices;
    set('online', fmtInt(dv.online), dv.online);
    set('online-note', 'of ' + fmtInt(dv.registered) + ' registered' + (dv.revoked ? ' · ' + fmtInt(dv.revoked) + ' revoked' : ''));
    set('rate', snap.readings_per_s === null ? '–' : fmtNum(snap.readings_per_s), snap.readings_per_s === null ? '' : snap.readings_per_s);
    set('readings-total', fmtInt(snap.readings_total) + ' readings stored', snap.readings_total);
    const lat = snap.latency;
    set('latency', lat.p50_ms === null ? '–' : fmtPair(lat.p50_ms, lat.p99_ms), lat.p50_ms === null ? '' : lat.p50_ms);
    set('latency-note', 'storage commit, ' + (lat.window_s ? 'last ' + lat.window_s + ' s' : 'since start') +
      ' · ' + fmtInt(lat.total_count) + ' in all');
    set('refusal-rate', snap.refusals_per_s === null ? '–' : fmtNum(snap.refusals_per_s), snap.refusals_per_s === null ? '' : snap.refusals_per_s);
    set('refusals-total', fmtInt(snap.refusals_total) + ' refused in all', snap.refusals_total);
    set('sessions', fmtInt(snap.sessions), snap.sessions);
    set('sessions-note', fmtInt(snap.half_open) + ' half-open · ' + fmtInt(snap.connections) + ' connections');
    drawRate(snap);
    drawLatency(lat);
    drawRefusals(snap, now);
    bars($('suites'), snap.handshakes.map(function (h) {
      return { label: h.suite, count: h.established };
    }), { cls: 'suite', empty: 'No handshakes yet.' });
    drawNodes(snap);
    drawDevices(snap);
    set('updated', 'updated ' + new Date(snap.t_ms).toLocaleTimeString('en-GB'));
    lastUpdate = now;
    body.dataset.updates = String(Number(body.dataset.updates) + 1);
    state('live', 'live');
  }

  function state(s, text) {
    body.dataset.state = s;
    $('conn-dot').className = 'dot ' + s;
    $('conn-text').textContent = text;
  }

  function onSnapshot(text) {
    let snap;
    try { snap = JSON.parse(text); } catch (e) { return; }
    render(snap);
  }

  // Signed out or the cookie expired: back to the page, which asks for the token.
  function checkAuth() {
    return fetch('/dashboard/data', { credentials: 'same-origin', cache: 'no-store' })
      .then(function (r) {
        if (r.status === 401) { window.location.assign('/dashboard'); return false; }
        return r.ok;
      })
      .catch(function () { return false; });
  }

  function poll() {
    fetch('/dashboard/data', { credentials: 'same-origin', cache: 'no-store' })
      .then(function (r) {
        if (r.status === 401) { window.location.assign('/dashboard'); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (t) { if (t) onSnapshot(t); else state('stale', 'gateway unreachable'); })
      .catch(function () { state('stale', 'gateway unreachable'); })
      .finally(function () { setTimeout(poll, 1000); });
  }

  function connect() {
    if (!window.EventSource) { poll(); return; }
    const es = new EventSource('/dashboard/events');
    es.addEventListener('snapshot', function (e) { onSnapshot(e.data); });
    es.onerror = function () {
      if (es.readyState === EventSource.CLOSED) {
        state('stale', 'disconnected, retrying…');
        checkAuth().finally(function () { setTimeout(connect, 3000); });
      } else {
        state('stale', 'reconnecting…');
      }
    };
  }

  setInterval(function () {
    if (lastUpdate && Date.now() - lastUpdate > 5000 && body.dataset.state === 'live') {
      state('stale', 'no update for ' + Math.round((Date.now() - lastUpdate) / 1000) + ' s');
    }
  }, 1000);

  connect();
})();
