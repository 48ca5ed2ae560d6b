// sluice console: polls /v1/snapshot every second and redraws the page in place.
// No framework and nothing fetched from elsewhere. Every text from the broker goes in with
// textContent (never innerHTML), so names of groups, clients and hosts cannot inject markup.
'use strict';

(function () {
  const POLL_MS = 1000;
  const HISTORY = 60; // chart points kept
  const COLORS = {
    msg: '#2f6fd0', in: '#2a9d4b', out: '#d2452f', p50: '#2f6fd0', p99: '#e08a00',
    grid: '#e3e6ea', axis: '#6b7280', text: '#4b5563', bg: '#ffffff',
  };

  // ---- state -------------------------------------------------------------------------
  const state = {
    status: null,
    bounds: [],
    prev: null, // {uptime, node, counters: Map key -> {m, bi, bo}, sync: [counts]}
    history: [], // one point per interval between two polls
    topicRates: new Map(), // topic -> messages/s over the last interval
    expandedTopics: new Set(),
    expandedGroups: new Set(),
    polls: 0,
    inflight: false,
    again: false,
    timer: 0,
  };
  // read-only view for tests and for poking at from the devtools console
  window.sluiceConsole = {
    get history() { return state.history.map((p) => Object.assign({}, p)); },
    get status() { return state.status; },
    get polls() { return state.polls; },
    pollNow: () => pollNow(),
  };

  const $ = (id) => document.getElementById(id);

  // ---- formatting ----------------------------------------------------------------------
  function fmtInt(n) {
    if (n === null || n === undefined || !Number.isFinite(Number(n))) return '–';
    const s = String(Math.trunc(Number(n)));
    const neg = s.startsWith('-');
    const d = neg ? s.slice(1) : s;
    let out = '';
    for (let i = 0; i < d.length; i++) {
      if (i > 0 && (d.length - i) % 3 === 0) out += ',';
      out += d[i];
    }
    return (neg ? '-' : '') + out;
  }

  function fmtBytes(n) {
    if (n === null || n === undefined || !Number.isFinite(n)) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let v = n;
    let u = 0;
    while (Math.abs(v) >= 1024 && u < units.length - 1) { v /= 1024; u++; }
    return (u === 0 ? String(Math.round(v)) : trimNum(v)) + ' ' + units[u];
  }

  function fmtRate(n) {
    if (n === null || n === undefined || !Number.isFinite(n)) return '–';
    const a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(2) + 'G';
    if (a >= 1e6) return (n / 1e6).toFixed(2) + 'M';
    if (a >= 1e4) return (n / 1e3).toFixed(1) + 'k';
    if (a >= 100) return String(Math.round(n));
    if (a === 0) return '0';
    return n.toFixed(1);
  }

  function fmtByteRate(n) {
    if (n === null || n === undefined || !Number.isFinite(n)) return '–';
    return fmtBytes(n);
  }

  function fmtSeconds(s) {
    if (s === null || s === undefined) return '–';
    if (s === Infinity) {
      const last = state.bounds[state.bounds.length - 1];
      return '> ' + fmtSeconds(last);
    }
    if (s < 1e-3) return trimNum(s * 1e6) + ' µs';
    if (s < 1) return trimNum(s * 1e3) + ' ms';
    return trimNum(s) + ' s';
  }

  function trimNum(x) {
    return String(Number(x.toPrecision(3)));
  }

  function fmtUptime(sec) {
    let s = Math.floor(sec);
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d > 0) return `${d}d ${h}h ${m}m`;
    if (h > 0) return `${h}h ${m}m ${s}s`;
    if (m > 0) return `${m}m ${s}s`;
    return `${s}s`;
  }

  // ---- DOM helpers -------------------------------------------------------------------
  // el('td', {class: 'num', data: {field: 'x'}}, 'text', childNode, ...)
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') e.className = v;
        else if (k === 'data') Object.assign(e.dataset, v);
        else if (k === 'on') for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
        else e.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
    }
    return e;
  }

  function setText(node, text) {
    const t = String(text);
    if (node && node.textContent !== t) node.textContent = t;
  }

  // The cell data-field=`field` of `row`: shown text, and the raw number in data-value.
  function setCell(row, field, text, raw) {
    const td = row.querySelector(`[data-field="${field}"]`);
    if (!td) return;
    setText(td, text);
    const v = raw === undefined ? String(text) : String(raw);
    if (td.dataset.value !== v) td.dataset.value = v;
  }

  // Keyed update of a list of rows: existing rows (and what is typed into their inputs)
  // survive a refresh; rows are only moved when the order changed.
  function syncRows(parent, items, keyOf, create, update) {
    const existing = new Map();
    for (const r of Array.from(parent.children)) existing.set(r.dataset.key, r);
    const wanted = [];
    for (const it of items) {
      const k = keyOf(it);
      let r = existing.get(k);
      if (r) existing.delete(k);
      else { r = create(it); r.dataset.key = k; }
      update(r, it);
      wanted.push(r);
    }
    for (const r of existing.values()) r.remove();
    wanted.forEach((r, i) => {
      if (parent.children[i] !== r) parent.insertBefore(r, parent.children[i] || null);
    });
  }

  function toggleButton(expanded, label, onClick) {
    return el('button', {
      type: 'button', class: 'toggle', 'aria-expanded': String(expanded),
      'aria-label': label, data: { action: 'toggle' }, on: { click: onClick },
    }, expanded ? '▾' : '▸');
  }

  function setToggle(row, expanded) {
    const b = row.querySelector('button.toggle');
    if (!b) return;
    const v = String(expanded);
    if (b.getAttribute('aria-expanded') !== v) {
      b.setAttribute('aria-expanded', v);
      b.textContent = expanded ? '▾' : '▸';
    }
  }

  // ---- polling -----------------------------------------------------------------------
  async function poll() {
    clearTimeout(state.timer);
    state.inflight = true;
    const ctl = new AbortController();
    const abort = setTimeout(() => ctl.abort(), 5000);
    try {
      const r = await fetch('/v1/snapshot', { cache: 'no-store', signal: ctl.signal });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const data = await r.json();
      render(data);
      state.polls++;
      document.body.dataset.polls = String(state.polls);
      const ps = $('poll-state');
      ps.dataset.state = 'live';
      setText(ps, 'live · ' + new Date().toLocaleTimeString());
    } catch (e) {
      const ps = $('poll-state');
      ps.dataset.state = 'error';
      setText(ps, 'no answer from the broker (' + (e && e.name === 'AbortError' ? 'timed out' : e.message) + '), retrying');
    } finally {
      clearTimeout(abort);
      state.inflight = false;
      if (state.again) { state.again = false; poll(); } else state.timer = setTimeout(poll, POLL_MS);
    }
  }

  function pollNow() {
    if (state.inflight) state.again = true;
    else poll();
  }

  // ---- rates from the deltas between two polls -------------------------------------
  const pkey = (p) => p.topic + '\u0000' + p.partition;

  function quantileBound(counts, q) {
    const total = counts.reduce((a, b) => a + b, 0);
    if (total === 0) return null;
    const rank = Math.max(1, Math.ceil(q * total));
    let cum = 0;
    for (let i = 0; i < counts.length; i++) {
      cum += counts[i];
      if (cum >= rank) return i < state.bounds.length ? state.bounds[i] : Infinity;
    }
    return Infinity;
  }

  function sample(data) {
    const snap = data.snapshot;
    const counters = new Map();
    for (const p of snap.partitions) {
      counters.set(pkey(p), { m: p.messages_in, bi: p.bytes_in, bo: p.bytes_out, t: p.topic });
    }
    const sync = snap.storage.sync_latency.counts.slice();
    const now = { uptime: data.status.uptime_seconds, node: data.status.node_id, counters, sync };
    const prev = state.prev;
    state.prev = now;
    if (!prev || prev.node !== now.node || now.uptime <= prev.uptime) {
      // first poll, or the broker restarted: no interval to measure yet
      if (prev) state.history = [];
      state.topicRates = new Map();
      return;
    }
    const dt = now.uptime - prev.uptime;
    let m = 0, bi = 0, bo = 0;
    const perTopic = new Map();
    for (const [k, c] of counters) {
      const o = prev.counters.get(k);
      if (!o) continue; // new partition: counted from the next interval on
      const dm = Math.max(0, c.m - o.m);
      m += dm;
      bi += Math.max(0, c.bi - o.bi);
      bo += Math.max(0, c.bo - o.bo);
      perTopic.set(c.t, (perTopic.get(c.t) || 0) + dm);
    }
    state.topicRates = new Map();
    for (const [t, n] of perTopic) state.topicRates.set(t, n / dt);
    const syncDelta = sync.map((n, i) => Math.max(0, n - (prev.sync[i] || 0)));
    const syncs = syncDelta.reduce((a, b) => a + b, 0);
    state.history.push({
      uptime: now.uptime, dt,
      messages: m, bytes_in: bi, bytes_out: bo, syncs, sync_counts: syncDelta,
      messages_per_s: m / dt, bytes_in_per_s: bi / dt, bytes_out_per_s: bo / dt,
      syncs_per_s: syncs / dt,
      p50: quantileBound(syncDelta, 0.5), p99: quantileBound(syncDelta, 0.99),
    });
    while (state.history.length > HISTORY) state.history.shift();
  }

  // ---- rendering ---------------------------------------------------------------------
  function render(data) {
    const st = data.status;
    const snap = data.snapshot;
    state.lastData = data; // for immediate redraws (expanding rows, resizing)
    state.status = st;
    state.bounds = data.latency_bounds_seconds || [];
    sample(data);

    setText($('status-version'), st.version);
    setText($('status-node-id'), st.node_id);
    setText($('status-cluster-id'), st.cluster_id || '–');
    setText($('status-uptime'), fmtUptime(st.uptime_seconds));
    $('status-uptime').dataset.value = String(st.uptime_seconds);
    setText($('status-shards'), st.shards);
    const title = `sluice · node ${st.node_id}`;
    if (document.title !== title) document.title = title;

    const parts = snap.partitions;
    const topics = groupTopics(parts);
    const stored = parts.reduce((a, p) => a + (p.log_end - p.log_start), 0);
    const bytes = parts.reduce((a, p) => a + p.size_bytes, 0);
    card('sum-topics', fmtInt(topics.length), topics.length);
    card('sum-partitions', fmtInt(parts.length), parts.length);
    card('sum-messages', fmtInt(stored), stored);
    card('sum-bytes', fmtBytes(bytes), bytes);
    card('sum-connections', fmtInt(snap.connections.open), snap.connections.open);
    card('sum-unsynced', fmtBytes(snap.unsynced_bytes), snap.unsynced_bytes);
    card('sum-poisoned', fmtInt(snap.poisoned_partitions), snap.poisoned_partitions);
    $('sum-poisoned').classList.toggle('bad', snap.poisoned_partitions > 0);
    card('sum-disk', `${fmtBytes(snap.disk.free_bytes)} of ${fmtBytes(snap.disk.total_bytes)}`,
      snap.disk.free_bytes);

    renderWriteSection(st);
    renderBrokers(st, snap);
    renderTopics(topics, st);
    renderGroups(snap.groups);
    renderApis(snap.apis);
    renderRates();
    drawCharts();
  }

  function card(id, text, raw) {
    const e = $(id);
    setText(e, text);
    e.dataset.value = String(raw);
  }

  function groupTopics(parts) {
    const by = new Map();
    for (const p of parts) {
      let t = by.get(p.topic);
      if (!t) { t = { name: p.topic, partitions: [] }; by.set(p.topic, t); }
      t.partitions.push(p);
    }
    const out = Array.from(by.values());
    out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const t of out) {
      t.partitions.sort((a, b) => a.partition - b.partition);
      t.messages = t.partitions.reduce((a, p) => a + (p.log_end - p.log_start), 0);
      t.size = t.partitions.reduce((a, p) => a + p.size_bytes, 0);
      t.poisoned = t.partitions.some((p) => p.poisoned);
      t.underReplicated = t.partitions.some((p) => p.isr.length < p.replicas.length);
    }
    return out;
  }

  function renderBrokers(st, snap) {
    const tbody = $('brokers').tBodies[0];
    const c = snap.cluster;
    let rows;
    if (c) {
      rows = c.brokers.map((b) => ({
        id: b.id, host: b.host, port: b.port,
        state: b.fenced ? 'fenced' : 'active', me: b.id === st.node_id,
      }));
    } else {
      const l = (st.listeners && st.listeners[0]) || { host: '', port: '' };
      rows = [{ id: st.node_id, host: l.host, port: l.port, state: 'single node', me: true }];
    }
    rows.sort((a, b) => a.id - b.id);
    syncRows(tbody, rows, (r) => String(r.id), (r) => el('tr', { data: { broker: String(r.id) } },
      el('td', { data: { field: 'id' } }), el('td', { data: { field: 'host' } }),
      el('td', { class: 'num', data: { field: 'port' } }), el('td', { data: { field: 'state' } })),
    (tr, r) => {
      setCell(tr, 'id', r.me ? `${r.id} (this broker)` : String(r.id), r.id);
      setCell(tr, 'host', r.host);
      setCell(tr, 'port', r.port);
      setCell(tr, 'state', r.state);
      tr.classList.toggle('bad', r.state === 'fenced');
      tr.classList.toggle('me', r.me);
    });

    const sum = $('cluster-summary');
    if (!c) {
      setText(sum, '');
      return;
    }
    const facts = [
      ['under-replicated', 'under-replicated (led here)', c.under_replicated_partitions],
      ['offline', 'offline', c.offline_partitions],
      ['isr-shrinks', 'ISR shrinks', c.isr_shrinks],
      ['isr-expands', 'ISR expands', c.isr_expands],
      ['leader-elections', 'leader elections', c.leader_elections],
    ];
    if (sum.childElementCount !== facts.length) {
      sum.textContent = '';
      for (const [key, label] of facts) {
        sum.appendChild(el('span', { class: 'fact' }, label + ' ', el('b', { id: 'cluster-' + key })));
      }
    }
    for (const [key, , v] of facts) {
      const b = $('cluster-' + key);
      setText(b, fmtInt(v));
      b.dataset.value = String(v);
      b.classList.toggle('bad', (key === 'under-replicated' || key === 'offline') && v > 0);
    }
  }

  function renderTopics(topics, st) {
    const tbody = $('topics').tBodies[0];
    $('topics-empty').hidden = topics.length > 0;
    const canWrite = !!st.console_write;
    const items = [];
    for (const t of topics) {
      items.push({ kind: 't', t });
      if (state.expandedTopics.has(t.name)) items.push({ kind: 'd', t });
    }
    const keyOf = (it) => it.kind + '\u0000' + it.t.name + (it.kind === 'd' && canWrite ? '\u0000w' : '');
    syncRows(tbody, items, keyOf,
      (it) => (it.kind === 't' ? topicRow(it.t.name) : topicDetail(it.t.name, canWrite)),
      (tr, it) => {
        const t = it.t;
        if (it.kind === 't') {
          setToggle(tr, state.expandedTopics.has(t.name));
          setCell(tr, 'partitions', fmtInt(t.partitions.length), t.partitions.length);
          setCell(tr, 'messages', fmtInt(t.messages), t.messages);
          setCell(tr, 'size', fmtBytes(t.size), t.size);
          const rate = state.topicRates.has(t.name) ? state.topicRates.get(t.name) : null;
          setCell(tr, 'rate', fmtRate(rate), rate === null ? '' : rate);
          const flag = tr.querySelector('[data-field="flags"]');
          setText(flag, t.poisoned ? 'poisoned' : t.underReplicated ? 'under-replicated' : '');
          tr.classList.toggle('bad', t.poisoned);
          tr.classList.toggle('warn', !t.poisoned && t.underReplicated);
          return;
        }
        syncRows(tr.querySelector('tbody.partitions'), t.partitions, (p) => String(p.partition),
          (p) => partitionRow(p, canWrite), (r, p) => {
            setCell(r, 'partition', String(p.partition), p.partition);
            setCell(r, 'log_start', fmtInt(p.log_start), p.log_start);
            setCell(r, 'high_watermark', fmtInt(p.high_watermark), p.high_watermark);
            setCell(r, 'log_end', fmtInt(p.log_end), p.log_end);
            setCell(r, 'messages', fmtInt(p.log_end - p.log_start), p.log_end - p.log_start);
            setCell(r, 'size', fmtBytes(p.size_bytes), p.size_bytes);
            setCell(r, 'segments', fmtInt(p.segments), p.segments);
            setCell(r, 'leader', p.leader < 0 ? 'none' : String(p.leader), p.leader);
            setCell(r, 'replicas', p.replicas.join(', '), p.replicas.join(','));
            setCell(r, 'isr', p.isr.join(', '), p.isr.join(','));
            r.classList.toggle('bad', p.poisoned || p.leader < 0);
            r.classList.toggle('warn', p.isr.length < p.replicas.length);
          });
      });
  }

  function topicRow(name) {
    const toggle = () => {
      if (state.expandedTopics.has(name)) state.expandedTopics.delete(name);
      else state.expandedTopics.add(name);
      rerender();
    };
    return el('tr', { class: 'topic', data: { topic: name } },
      el('td', { class: 'tog' }, toggleButton(false, 'partitions of ' + name, toggle)),
      el('td', { data: { field: 'topic', value: name } },
        el('span', { class: 'name', on: { click: toggle } }, name), ' ',
        el('span', { class: 'flag', data: { field: 'flags' } })),
      el('td', { class: 'num', data: { field: 'partitions' } }),
      el('td', { class: 'num', data: { field: 'messages' } }),
      el('td', { class: 'num', data: { field: 'size' } }),
      el('td', { class: 'num', data: { field: 'rate' } }));
  }

  const PART_COLS = ['partition', 'log start', 'high watermark', 'log end', 'messages', 'size',
    'segments', 'leader', 'replicas', 'ISR'];
  const PART_FIELDS = ['partition', 'log_start', 'high_watermark', 'log_end', 'messages', 'size',
    'segments', 'leader', 'replicas', 'isr'];

  // The partitions of an expanded topic: one row under the topic's, holding their table.
  function topicDetail(topic, canWrite) {
    const head = PART_COLS.map((c) => el('th', { class: 'num' }, c));
    if (canWrite) head.push(el('th', null, 'delete records before offset'));
    return el('tr', { class: 'topic-detail', data: { topicDetail: topic } }, el('td'),
      el('td', { colspan: 5 },
        el('table', { class: 'sub' }, el('thead', null, el('tr', null, ...head)),
          el('tbody', { class: 'partitions' }))));
  }

  function partitionRow(p, canWrite) {
    const cells = PART_FIELDS.map((f) => el('td', { class: 'num', data: { field: f } }));
    if (canWrite) cells.push(deleteRecordsCell(p.topic, p.partition));
    return el('tr', { class: 'partition', data: { topic: p.topic, partition: String(p.partition) } },
      ...cells);
  }

  function deleteRecordsCell(topic, partition) {
    const input = el('input', {
      type: 'number', min: '-1', step: '1', size: '8', placeholder: 'offset',
      title: 'records below this offset are deleted (-1: up to the high watermark)',
      'aria-label': `delete records of ${topic} partition ${partition} before offset`,
      data: { field: 'delete-offset' },
    });
    const out = el('output', { class: 'result', data: { field: 'delete-result' } });
    const button = el('button', { type: 'button', data: { action: 'delete-records' } }, 'Delete');
    const go = async () => {
      const v = input.value.trim();
      if (!/^-?\d+$/.test(v)) {
        showResult(out, { status: 0, error: 'INVALID_INPUT', text: 'give an offset (a whole number, -1 for the high watermark)' });
        return;
      }
      button.disabled = true;
      showResult(out, { status: 0, error: '', text: 'deleting…', pending: true });
      const r = await post(`/v1/topics/${encodeURIComponent(topic)}/delete-records`,
        { partition, before_offset: Number(v) });
      button.disabled = false;
      if (r.ok) r.text = `deleted: log start is now ${fmtInt(r.body.result.low_watermark)}`;
      showResult(out, r);
      pollNow();
    };
    button.addEventListener('click', go);
    input.addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); go(); } });
    return el('td', { class: 'actions' }, input, ' ', button, ' ', out);
  }

  function renderGroups(groups) {
    const tbody = $('groups').tBodies[0];
    $('groups-empty').hidden = groups.length > 0;
    const items = [];
    for (const g of groups) {
      items.push({ kind: 'g', g });
      if (state.expandedGroups.has(g.group)) items.push({ kind: 'd', g });
    }
    syncRows(tbody, items, (it) => it.kind + '\u0000' + it.g.group,
      (it) => (it.kind === 'g' ? groupRow(it.g.group) : groupDetail(it.g.group)),
      (tr, it) => {
        const g = it.g;
        if (it.kind === 'g') {
          setToggle(tr, state.expandedGroups.has(g.group));
          let lag = 0, unknown = 0;
          for (const o of g.offsets) {
            if (o.lag === null || o.lag === undefined) unknown++;
            else lag += o.lag;
          }
          setCell(tr, 'state', g.state);
          setCell(tr, 'members', fmtInt(g.members), g.members);
          setCell(tr, 'lag', fmtInt(lag) + (unknown ? ` (+${unknown} unknown)` : ''), lag);
          tr.querySelector('[data-field="lag"]').dataset.unknown = String(unknown);
        } else {
          const offs = g.offsets.slice().sort((a, b) =>
            (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.partition - b.partition));
          syncRows(tr.querySelector('tbody.offsets'), offs, (o) => pkey(o),
            (o) => el('tr', { data: { topic: o.topic, partition: String(o.partition) } },
              el('td', { data: { field: 'topic' } }), el('td', { class: 'num', data: { field: 'partition' } }),
              el('td', { class: 'num', data: { field: 'offset' } }), el('td', { class: 'num', data: { field: 'log_end' } }),
              el('td', { class: 'num', data: { field: 'lag' } })),
            (r, o) => {
              setCell(r, 'topic', o.topic);
              setCell(r, 'partition', String(o.partition), o.partition);
              setCell(r, 'offset', fmtInt(o.offset), o.offset);
              const known = (v) => v !== null && v !== undefined;
              setCell(r, 'log_end', known(o.log_end) ? fmtInt(o.log_end) : 'not here', known(o.log_end) ? o.log_end : '');
              setCell(r, 'lag', known(o.lag) ? fmtInt(o.lag) : 'unknown', known(o.lag) ? o.lag : '');
            });
          tr.querySelector('.no-offsets').hidden = offs.length > 0;
          const members = g.member_details.slice().sort((a, b) =>
            (a.member_id < b.member_id ? -1 : a.member_id > b.member_id ? 1 : 0));
          syncRows(tr.querySelector('tbody.members'), members, (m) => m.member_id,
            (m) => el('tr', { data: { member: m.member_id } },
              el('td', { data: { field: 'member_id' } }), el('td', { data: { field: 'client_id' } }),
              el('td', { data: { field: 'host' } })),
            (r, m) => {
              setCell(r, 'member_id', m.member_id);
              setCell(r, 'client_id', m.client_id);
              setCell(r, 'host', m.host);
            });
          tr.querySelector('.no-members').hidden = members.length > 0;
        }
      });
  }

  function groupRow(name) {
    const toggle = () => {
      if (state.expandedGroups.has(name)) state.expandedGroups.delete(name);
      else state.expandedGroups.add(name);
      rerender();
    };
    return el('tr', { class: 'group', data: { group: name } },
      el('td', { class: 'tog' }, toggleButton(false, 'details of group ' + name, toggle)),
      el('td', { data: { field: 'group', value: name } }, el('span', { class: 'name', on: { click: toggle } }, name)),
      el('td', { data: { field: 'state' } }),
      el('td', { class: 'num', data: { field: 'members' } }),
      el('td', { class: 'num', data: { field: 'lag' } }));
  }

  function groupDetail(name) {
    const offsets = el('table', { class: 'sub' },
      el('thead', null, el('tr', null, el('th', null, 'topic'), el('th', { class: 'num' }, 'partition'),
        el('th', { class: 'num' }, 'committed offset'), el('th', { class: 'num' }, 'log end'),
        el('th', { class: 'num' }, 'lag'))),
      el('tbody', { class: 'offsets' }));
    const members = el('table', { class: 'sub' },
      el('thead', null, el('tr', null, el('th', null, 'member id'), el('th', null, 'client id'),
        el('th', null, 'host'))),
      el('tbody', { class: 'members' }));
    return el('tr', { class: 'group-detail', data: { groupDetail: name } }, el('td'),
      el('td', { colspan: 4 },
        el('div', { class: 'detail' },
          el('div', null, el('h3', null, 'Committed offsets'), offsets,
            el('p', { class: 'empty no-offsets' }, 'No committed offsets.')),
          el('div', null, el('h3', null, 'Members'), members,
            el('p', { class: 'empty no-members' }, 'No members.')))));
  }

  function renderApis(apis) {
    const tbody = $('apis').tBodies[0];
    const rows = Object.entries(apis).map(([name, a]) => ({ name, a }));
    rows.sort((x, y) => y.a.requests - x.a.requests || (x.name < y.name ? -1 : 1));
    syncRows(tbody, rows, (r) => r.name, (r) => el('tr', { data: { api: r.name } },
      el('td', { data: { field: 'api' } }, r.name), el('td', { class: 'num', data: { field: 'requests' } }),
      el('td', { class: 'num', data: { field: 'errors' } }), el('td', { class: 'num', data: { field: 'latency' } })),
    (tr, r) => {
      const errs = r.a.errors.reduce((s, e) => s + e[1], 0);
      setCell(tr, 'requests', fmtInt(r.a.requests), r.a.requests);
      setCell(tr, 'errors', fmtInt(errs), errs);
      tr.querySelector('[data-field="errors"]').title =
        r.a.errors.map((e) => `error code ${e[0]}: ${e[1]}`).join('\n');
      const mean = r.a.requests ? r.a.latency.sum_ns / r.a.requests / 1e9 : null;
      setCell(tr, 'latency', mean === null ? '–' : fmtSeconds(mean), mean === null ? '' : mean);
    });
  }

  function rerender() {
    // redraw from the last snapshot at once (expanding a row should not wait for a poll)
    if (state.lastData) renderTablesOnly(state.lastData);
  }

  function renderTablesOnly(data) {
    renderTopics(groupTopics(data.snapshot.partitions), data.status);
    renderGroups(data.snapshot.groups);
  }

  function renderRates() {
    const last = state.history[state.history.length - 1];
    const set = (id, text, raw) => { const e = $(id); setText(e, text); e.dataset.value = raw === null || raw === undefined ? '' : String(raw); };
    set('rate-messages-in', last ? fmtRate(last.messages_per_s) : '–', last && last.messages_per_s);
    set('rate-bytes-in', last ? fmtByteRate(last.bytes_in_per_s) : '–', last && last.bytes_in_per_s);
    set('rate-bytes-out', last ? fmtByteRate(last.bytes_out_per_s) : '–', last && last.bytes_out_per_s);
    set('sync-rate', last ? fmtRate(last.syncs_per_s) : '–', last && last.syncs_per_s);
    // latency: the last interval that had a sync
    let lat = null;
    for (let i = state.history.length - 1; i >= 0; i--) {
      if (state.history[i].p50 !== null) { lat = state.history[i]; break; }
    }
    const enc = (v) => (v === Infinity ? 'inf' : v);
    set('sync-p50', lat ? '≤ ' + fmtSeconds(lat.p50) : 'no syncs', lat && enc(lat.p50));
    set('sync-p99', lat ? '≤ ' + fmtSeconds(lat.p99) : 'no syncs', lat && enc(lat.p99));
  }

  // ---- writes ------------------------------------------------------------------------
  function renderWriteSection(st) {
    const slot = $('write-slot');
    const on = !!st.console_write;
    let sec = $('write-section');
    if (!on) {
      if (sec) sec.remove();
      return;
    }
    if (!sec) {
      slot.appendChild($('tpl-write').content.cloneNode(true));
      sec = $('write-section');
      $('create-topic-form').addEventListener('submit', createTopic);
      $('auth-box').addEventListener('submit', (e) => e.preventDefault());
    }
    $('auth-box').hidden = !st.authorizer;
  }

  function basicAuth() {
    if (!state.status || !state.status.authorizer) return null;
    const user = $('auth-user').value;
    const pass = $('auth-pass').value;
    if (!user) return null;
    const bytes = new TextEncoder().encode(user + ':' + pass);
    let bin = '';
    for (const b of bytes) bin += String.fromCharCode(b);
    return 'Basic ' + btoa(bin);
  }

  async function post(url, body) {
    const headers = { 'Content-Type': 'application/json' };
    const auth = basicAuth();
    if (auth) headers.Authorization = auth;
    let r;
    try {
      // credentials 'omit': the Authorization header above is still sent, but a 401 with
      // WWW-Authenticate gets no browser login prompt (the answer is shown on the page)
      r = await fetch(url, {
        method: 'POST', headers, body: JSON.stringify(body), cache: 'no-store', credentials: 'omit',
      });
    } catch (e) {
      return { ok: false, status: 0, error: 'NETWORK', text: 'request failed: ' + e.message, body: null };
    }
    let json = null;
    try { json = await r.json(); } catch (e) { json = null; }
    const error = json && typeof json.error === 'string' ? json.error : `HTTP ${r.status}`;
    const ok = r.ok && json && json.error_code === 0;
    let text;
    if (ok) text = 'done';
    else if (json && json.message) text = `${error}: ${json.message}`;
    else text = error;
    return { ok, status: r.status, error: ok ? 'NONE' : error, text: `${text} (HTTP ${r.status})`, body: json };
  }

  function showResult(out, r) {
    out.classList.toggle('ok', !!r.ok);
    out.classList.toggle('err', !r.ok && !r.pending);
    out.dataset.status = String(r.status);
    out.dataset.error = r.error || '';
    setText(out, r.text);
  }

  async function createTopic(ev) {
    ev.preventDefault();
    const out = $('create-result');
    const name = $('create-name').value.trim();
    const partitions = parseInt($('create-partitions').value, 10);
    const rf = parseInt($('create-replication').value, 10);
    const configs = {};
    for (const item of $('create-configs').value.split(/[,\n]/)) {
      const s = item.trim();
      if (!s) continue;
      const i = s.indexOf('=');
      if (i <= 0) {
        showResult(out, { status: 0, error: 'INVALID_INPUT', text: `configs: "${s}" is not key=value` });
        return;
      }
      configs[s.slice(0, i).trim()] = s.slice(i + 1).trim();
    }
    const body = { name, configs };
    body.partitions = Number.isFinite(partitions) ? partitions : -1;
    body.replication_factor = Number.isFinite(rf) ? rf : -1;
    const button = $('create-submit');
    button.disabled = true;
    showResult(out, { status: 0, error: '', text: 'creating…', pending: true });
    const r = await post('/v1/topics', body);
    button.disabled = false;
    if (r.ok) {
      const n = r.body.result && r.body.result.partitions;
      r.text = `created topic ${name}` + (n > 0 ? ` with ${n} partition${n === 1 ? '' : 's'}` : '');
      state.expandedTopics.delete(name);
    }
    showResult(out, r);
    pollNow();
  }

  // ---- charts ------------------------------------------------------------------------
  function fitCanvas(c) {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(200, Math.round(c.clientWidth * dpr));
    const h = Math.max(120, Math.round(c.clientHeight * dpr));
    if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
    const ctx = c.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    return { ctx, w: w / dpr, h: h / dpr };
  }

  // a top of the bytes axis whose quarters are round in KiB / MiB / ...
  function niceCeilBytes(v) {
    if (!(v > 0)) return 1024;
    let u = 1;
    while (v >= 1024 * u) u *= 1024;
    for (let m = 1; m <= 1024; m *= 2) if (m * u >= v) return Math.max(m * u, 4);
    return 1024 * u;
  }

  function niceCeil(v) {
    if (!(v > 0)) return 1;
    const e = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * e >= v) return m * e;
    return 10 * e;
  }

  // One panel: y axis on the left, the newest point on the right, HISTORY slots wide.
  function panel(ctx, box, series, opt) {
    const { x, y, w, h } = box;
    const left = x + 58, right = x + w - 8, top = y + 18, bottom = y + h - 16;
    ctx.font = '11px system-ui, sans-serif';
    ctx.fillStyle = COLORS.text;
    ctx.textBaseline = 'alphabetic';
    ctx.textAlign = 'left';
    ctx.fillText(opt.title, left, y + 12);

    let ticks, ymap;
    if (opt.log) {
      const vals = [];
      for (const s of series) for (const v of s.values) if (v !== null && v !== Infinity) vals.push(v);
      const lo = opt.lo;
      let hi = Math.max(opt.hi, ...vals) * 1.0001;
      const l0 = Math.log10(lo), l1 = Math.log10(hi);
      ymap = (v) => bottom - (Math.log10(Math.min(Math.max(v, lo), hi)) - l0) / (l1 - l0) * (bottom - top);
      ticks = [];
      for (let d = Math.ceil(l0); d <= Math.floor(l1); d++) ticks.push(Math.pow(10, d));
    } else {
      let max = 0;
      for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
      max = opt.bytes ? niceCeilBytes(max) : niceCeil(Math.max(max, opt.minMax || 0));
      ymap = (v) => bottom - (v / max) * (bottom - top);
      ticks = [0, max / 4, max / 2, (3 * max) / 4, max];
    }
    ctx.strokeStyle = COLORS.grid;
    ctx.lineWidth = 1;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (const t of ticks) {
      const ty = Math.round(ymap(t)) + 0.5;
      ctx.beginPath(); ctx.moveTo(left, ty); ctx.lineTo(right, ty); ctx.stroke();
      ctx.fillText(opt.fmt(t), left - 6, ty);
    }
    ctx.strokeStyle = COLORS.axis;
    ctx.beginPath(); ctx.moveTo(left + 0.5, top); ctx.lineTo(left + 0.5, bottom + 0.5); ctx.lineTo(right, bottom + 0.5); ctx.stroke();
    ctx.textAlign = 'right';
    ctx.textBaseline = 'top';
    ctx.fillText('now', right, bottom + 3);
    ctx.textAlign = 'left';
    ctx.fillText(`−${HISTORY}s`, left + 2, bottom + 3);

    const xmap = (i, n) => right - ((n - 1 - i) / (HISTORY - 1)) * (right - left);
    for (const s of series) {
      const n = s.values.length;
      ctx.strokeStyle = s.color;
      ctx.fillStyle = s.color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      let pen = false;
      for (let i = 0; i < n; i++) {
        const v = s.values[i];
        if (v === null) { pen = false; continue; }
        const vy = v === Infinity ? top : ymap(v);
        const vx = xmap(i, n);
        if (!pen) { ctx.moveTo(vx, vy); pen = true; } else ctx.lineTo(vx, vy);
      }
      ctx.stroke();
      // a dot on every point, so a single point shows too
      for (let i = 0; i < n; i++) {
        const v = s.values[i];
        if (v === null) continue;
        ctx.beginPath();
        ctx.arc(xmap(i, n), v === Infinity ? top : ymap(v), 2, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    if (!series.some((s) => s.values.some((v) => v !== null))) {
      ctx.fillStyle = COLORS.axis;
      ctx.textAlign = 'center';
      ctx.textBaseline = 'middle';
      ctx.fillText(opt.empty || 'waiting for data…', (left + right) / 2, (top + bottom) / 2);
    }
  }

  function drawCharts() {
    const hist = state.history;
    const tp = $('chart-throughput');
    {
      const { ctx, w, h } = fitCanvas(tp);
      ctx.fillStyle = COLORS.bg;
      ctx.fillRect(0, 0, w, h);
      const half = Math.floor(h / 2);
      panel(ctx, { x: 0, y: 0, w, h: half }, [
        { values: hist.map((p) => p.messages_per_s), color: COLORS.msg },
      ], { title: 'messages in / s', fmt: fmtRate, minMax: 10 });
      panel(ctx, { x: 0, y: half, w, h: h - half }, [
        { values: hist.map((p) => p.bytes_in_per_s), color: COLORS.in },
        { values: hist.map((p) => p.bytes_out_per_s), color: COLORS.out },
      ], { title: 'bytes in / out per s', fmt: fmtBytes, bytes: true });
      tp.dataset.points = String(hist.length);
    }
    const sc = $('chart-sync');
    {
      const { ctx, w, h } = fitCanvas(sc);
      ctx.fillStyle = COLORS.bg;
      ctx.fillRect(0, 0, w, h);
      const b = state.bounds;
      panel(ctx, { x: 0, y: 0, w, h }, [
        { values: hist.map((p) => p.p50), color: COLORS.p50 },
        { values: hist.map((p) => p.p99), color: COLORS.p99 },
      ], {
        title: 'fdatasync latency, upper bound of the p50 / p99 bucket (log scale)',
        fmt: fmtSeconds, log: true, lo: b.length ? b[0] : 1e-5, hi: b.length ? Math.min(b[b.length - 1], 0.01) : 0.01,
        empty: hist.length ? 'no fdatasync in the last minute' : 'waiting for data…',
      });
      sc.dataset.points = String(hist.length);
    }
  }

  window.addEventListener('resize', () => { if (state.lastData) drawCharts(); });

  poll();
})();
