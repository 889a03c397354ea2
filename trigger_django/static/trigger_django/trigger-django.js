/*
 * trigger_django stream viewer: live Trigger.dev output streams in server-rendered pages.
 *
 * Plain JS, no build step, no globals. Configured only by data-* attributes: the WebSocket path
 * on this <script> (data-ws-path), everything else on each [data-trigger-stream] element, which
 * {% stream_viewer %} renders. One WebSocket per page carries every viewer. The message schema
 * and the close codes are documented in docs/stream-viewer.md.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  var WS_PATH = (script && script.dataset.wsPath) || "/trigger/ws/";
  // Stream viewers, and run viewers / run status badges ({% run_viewer %}, {% run_status %}).
  var SELECTOR = "[data-trigger-stream], [data-trigger-live-run]";
  // Close codes worth retrying: the server or the network went away, not a refusal.
  var RETRYABLE_CLOSE_CODES = [1001, 1005, 1006, 1011, 1012, 1013, 1014];
  var CLOSE_MESSAGES = {
    4400: "The live connection was refused because of a malformed message (4400). Reload the page.",
    4401: "You are not logged in, or this page is too old (4401). Log in again and reload the page.",
    4403: "You are not allowed to view this stream (4403).",
    4404: "This stream was not found (4404)."
  };
  var BACKOFF_BASE_MS = 100;
  var BACKOFF_MAX_MS = 5000;

  var viewers = new Map(); // subscription id -> viewer record
  var viewerByElement = new WeakMap();
  var socket = null;
  var attempt = 0;
  var retryTimer = null;
  var nextSubscription = 1;
  var flushScheduled = false;
  var flushTimer = null; // a viewer waiting out its throttle: the frame after it is due
  var flushTimerAt = 0;

  // --- cursors -------------------------------------------------------------------------------
  // v2 ids are S2 seq numbers ("17"), v1 ids are Redis ids ("1735689600000-3"); both can exceed
  // 2^53, so compare digit strings by length, then lexically. A v1 entry can yield several
  // parts with the same id: the server numbers them ("i"), so a v1 cursor is (id, i). A v2 id
  // names one record: a repeated v2 id is the same record re-sent, whatever its "i".
  function compareDigits(a, b) {
    a = a.replace(/^0+(?=\d)/, "");
    b = b.replace(/^0+(?=\d)/, "");
    if (a.length !== b.length) { return a.length < b.length ? -1 : 1; }
    return a === b ? 0 : (a < b ? -1 : 1);
  }

  function compareIds(a, b) {
    var pa = String(a).split("-");
    var pb = String(b).split("-");
    var n = Math.max(pa.length, pb.length);
    for (var k = 0; k < n; k++) {
      var c = compareDigits(pa[k] || "0", pb[k] || "0");
      if (c !== 0) { return c; }
    }
    return 0;
  }

  function compareCursors(a, b) {
    var c = compareIds(a.id, b.id);
    return c !== 0 ? c : a.i - b.i;
  }

  // --- viewers -------------------------------------------------------------------------------
  function intData(el, name) {
    var value = el.dataset[name];
    if (value === undefined || value === "") { return null; }
    var number = parseInt(value, 10);
    return isNaN(number) ? null : number;
  }

  function child(el, attribute) {
    return el.querySelector("[" + attribute + "]");
  }

  function emit(viewer, name, detail) {
    viewer.el.dispatchEvent(new CustomEvent(name, { bubbles: true, detail: detail }));
  }

  function setState(viewer, state) {
    if (viewer.state === state) { return; }
    var previous = viewer.state;
    viewer.state = state;
    viewer.el.setAttribute("data-state", state);
    // The output is a role="log": busy while it streams, so assistive technology waits for it.
    var output = viewer.feed === "stream" ? child(viewer.el, "data-trigger-output") : null;
    if (output) { output.setAttribute("aria-busy", state === "complete" || state === "error" ? "false" : "true"); }
    if (state === "live" && !viewer.announcedStart) {
      viewer.announcedStart = true;
      announce(viewer, "Receiving the stream.");
    }
    emit(viewer, "trigger:state", { state: state, previous: previous, runId: viewer.runId, key: viewer.key });
  }

  // Start, completion and errors, once each, in the viewer's polite status region (never per
  // part: the output itself is a busy log while it streams).
  function announce(viewer, text) {
    var region = child(viewer.el, "data-trigger-announce");
    if (region) { region.textContent = text; }
  }

  function jsonData(el, name) {
    try { return el.dataset[name] ? JSON.parse(el.dataset[name]) : null; } catch (e) { return null; }
  }

  function addViewer(el) {
    if (viewerByElement.has(el)) { return; }
    // Rendered complete (a finished run, its whole text in the page): nothing to subscribe.
    if (el.getAttribute("data-state") === "complete") { return; }
    var firstCursor = el.dataset.cursor ? { id: el.dataset.cursor, i: intData(el, "cursorI") || 0 } : null;
    var viewer = {
      id: "s" + nextSubscription++,
      el: el,
      ticket: el.dataset.ticket,
      runId: el.dataset.runId,
      feed: el.hasAttribute("data-trigger-live-run") ? "run" : "stream",
      key: el.hasAttribute("data-trigger-live-run") ? null : (el.dataset.key || "default"),
      timeout: intData(el, "timeout"),
      startIndex: intData(el, "startIndex"),
      throttleMs: intData(el, "throttleMs") || 0,
      maxParts: intData(el, "maxParts"),
      markdown: el.dataset.render === "markdown",
      parts: el.dataset.render === "parts", // object parts rendered on the server
      // parts: the text block text-delta parts append to; the first HTML may end with one
      textBlock: el.dataset.render === "parts" ? lastTextBlock(el) : null,
      // markdown: blocks inserted (numbered from 0) and the version of the tail shown; the
      // page's first HTML may hold some already (data-md-blocks, data-md-seq)
      mdBlocks: intData(el, "mdBlocks") || 0,
      mdSeq: intData(el, "mdSeq") || 0,
      mdTail: null,
      mdInterval: 0, // least ms between markdown updates, from their measured cost
      mdCost: 0,
      mdMeasuring: false,
      state: el.getAttribute("data-state") || "connecting",
      // last applied {id, i}: the first HTML may already hold the text up to data-cursor
      cursor: firstCursor,
      entryBefore: el.dataset.entryBefore || null, // the last applied id before cursor.id (see resumeCursor)
      pending: [], // received, not yet applied
      ackDue: false, // the server asked for an acknowledgement of what was received
      terminal: null, // complete/error message, applied after the pending parts
      kept: jsonData(el, "kept") || [], // texts of the last maxParts parts
      partCount: intData(el, "parts") || 0,
      announcedStart: false,
      lastFlush: 0,
      subscribed: false,
      done: false
    };
    viewerByElement.set(el, viewer);
    viewers.set(viewer.id, viewer);
    if (socket && socket.readyState === WebSocket.OPEN) {
      subscribe(viewer);
    } else {
      connect();
    }
  }

  // A run viewer's stream rendered by the server ({% run_viewer %}) ends with the text block of
  // its last text parts, if they were text: the next text parts go on in it.
  function lastTextBlock(el) {
    var output = child(el, "data-trigger-output");
    var last = output && output.lastChild;
    return last && last.nodeType === 1 && last.hasAttribute("data-trigger-text") ? last : null;
  }

  function removeViewer(viewer) {
    viewers.delete(viewer.id);
    if (viewer.subscribed && !viewer.done) {
      send({ type: "unsubscribe", sub: viewer.id });
    }
    viewer.subscribed = false;
    viewer.done = true;
    closeIfIdle();
  }

  function scan(root) {
    if (root.nodeType !== 1) { return; }
    if (root.matches(SELECTOR)) { addViewer(root); }
    var found = root.querySelectorAll(SELECTOR);
    for (var k = 0; k < found.length; k++) { addViewer(found[k]); }
  }

  function activeViewers() {
    var active = [];
    viewers.forEach(function (viewer) { if (!viewer.done) { active.push(viewer); } });
    return active;
  }

  // --- socket --------------------------------------------------------------------------------
  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(message));
    }
  }

  // Where to resume upstream. v2 ids name one part each: resume after the last one applied.
  // A v1 id ("ms-seq") names a Redis entry that may hold more lines than were applied, and the
  // upstream resumes strictly after an id, so resume after the entry before it: the applied
  // lines of the current entry come again and are skipped by their (id, i).
  function resumeCursor(viewer) {
    if (!viewer.cursor) { return null; }
    if (viewer.cursor.id.indexOf("-") === -1) { return viewer.cursor.id; }
    return viewer.entryBefore;
  }

  function subscribe(viewer) {
    if (viewer.done) { return; }
    // Anything received but not yet drawn is applied first, so the cursor is exact.
    applyPending(viewer);
    if (viewer.done) { return; }
    viewer.ackDue = false; // acknowledgements belong to the socket that sent the parts
    viewer.subscribed = true;
    if (viewer.feed === "run") {
      send({ type: "subscribe", feed: "run", sub: viewer.id, ticket: viewer.ticket, run_id: viewer.runId, cursor: viewer.cursor && viewer.cursor.id });
      return;
    }
    send({
      type: "subscribe",
      sub: viewer.id,
      ticket: viewer.ticket,
      run_id: viewer.runId,
      key: viewer.key,
      timeout: viewer.timeout,
      start_index: viewer.startIndex,
      cursor: resumeCursor(viewer),
      render: viewer.parts ? "parts" : (viewer.markdown ? "markdown" : undefined)
    });
  }

  function connect() {
    if (socket || activeViewers().length === 0) { return; }
    if (retryTimer) { clearTimeout(retryTimer); retryTimer = null; }
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + location.host + WS_PATH);
    socket = ws;
    ws.onopen = function () {
      activeViewers().forEach(subscribe);
    };
    ws.onmessage = function (event) {
      var message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      receive(message);
    };
    ws.onclose = function (event) {
      if (socket !== ws) { return; }
      socket = null;
      viewers.forEach(function (viewer) { viewer.subscribed = false; });
      var active = activeViewers();
      if (active.length === 0) { return; }
      if (RETRYABLE_CLOSE_CODES.indexOf(event.code) !== -1) {
        active.forEach(function (viewer) { applyPending(viewer); if (!viewer.done) { setState(viewer, "reconnecting"); } });
        scheduleReconnect();
      } else {
        var text = CLOSE_MESSAGES[event.code] || ("The live connection was closed (" + event.code + ").");
        active.forEach(function (viewer) { applyPending(viewer); fail(viewer, event.code, text); });
      }
    };
  }

  function retryLater(viewer, seconds) {
    viewer.subscribed = false;
    setState(viewer, "reconnecting");
    setTimeout(function () {
      if (!viewer.done && !viewer.subscribed && socket && socket.readyState === WebSocket.OPEN) {
        subscribe(viewer);
      }
    }, Math.max(seconds, 0.1) * 1000);
  }

  function scheduleReconnect() {
    attempt += 1;
    var base = Math.min(BACKOFF_BASE_MS * Math.pow(2, attempt - 1), BACKOFF_MAX_MS);
    var delay = base * (1 - 0.5 * Math.random());
    retryTimer = setTimeout(function () { retryTimer = null; connect(); }, delay);
  }

  function reconnectNow() {
    if (!socket && activeViewers().length > 0) { attempt = 0; connect(); }
  }

  function closeIfIdle() {
    // The browser, not the server, closes the socket once nothing is left to watch.
    if (socket && activeViewers().length === 0) {
      var ws = socket;
      socket = null;
      ws.close(1000);
    }
  }

  function receive(message) {
    var viewer;
    var due = Infinity;
    if (message.type === "parts") {
      (message.streams || []).forEach(function (batch) {
        var target = viewers.get(batch.sub);
        if (!target || target.done) { return; }
        for (var k = 0; k < batch.parts.length; k++) { target.pending.push(batch.parts[k]); }
        // Acknowledged once applied: only the batches the server marks, a few per window.
        if (batch.ack) { target.ackDue = true; }
        due = Math.min(due, dueIn(target, Date.now()));
      });
      scheduleFlush(due);
    } else if (message.type === "subscribed") {
      viewer = viewers.get(message.sub);
      attempt = 0;
      if (viewer && !viewer.done) {
        if (message.ticket) { viewer.ticket = message.ticket; }
        setState(viewer, "live");
      }
    } else if (message.type === "ticket") {
      // A renewed ticket: a page open longer than its first ticket's lifetime can resubscribe.
      viewer = viewers.get(message.sub);
      if (viewer && !viewer.done && message.ticket) { viewer.ticket = message.ticket; }
    } else if (message.type === "error" && message.status === 429 && typeof message.retry_after === "number") {
      // A subscribe limit that says when to retry: only this viewer waits, then resubscribes.
      viewer = viewers.get(message.sub);
      if (viewer && !viewer.done) { retryLater(viewer, message.retry_after); }
    } else if (message.type === "complete" || message.type === "error") {
      viewer = viewers.get(message.sub);
      if (viewer && !viewer.done) { viewer.terminal = message; scheduleFlush(); }
    }
  }

  // --- drawing -------------------------------------------------------------------------------
  // How long until a viewer may draw again (0: now): throttle_ms=, and for markdown its
  // measured drawing cost (see drawMarkdown); the stream's end is drawn at once.
  function dueIn(viewer, now) {
    if (viewer.terminal) { return 0; }
    var wait = viewer.markdown ? Math.max(viewer.throttleMs, viewer.mdInterval) : viewer.throttleMs;
    if (wait <= 16) { return 0; }
    return Math.max(0, wait - (now - viewer.lastFlush));
  }

  // The next animation frame, or (delay ms) a timer and then the next frame: parts for a viewer
  // that is waiting out its throttle ask for no frame before it is due.
  function scheduleFlush(delay) {
    if (delay === Infinity) { return; }
    if (delay > 0) {
      if (flushScheduled) { return; } // a frame comes sooner; flush arms what is still waiting
      var at = Date.now() + delay;
      if (flushTimer !== null) {
        if (flushTimerAt <= at) { return; }
        clearTimeout(flushTimer);
      }
      flushTimerAt = at;
      flushTimer = setTimeout(function () { flushTimer = null; scheduleFlush(0); }, delay);
      return;
    }
    if (flushScheduled) { return; }
    if (flushTimer !== null) { clearTimeout(flushTimer); flushTimer = null; }
    flushScheduled = true;
    // Hidden tabs get no animation frames; a timer keeps parts (and acks) moving.
    if (document.hidden) { setTimeout(flush, 50); } else { requestAnimationFrame(flush); }
  }

  function flush() {
    flushScheduled = false;
    var now = Date.now();
    var again = Infinity;
    viewers.forEach(function (viewer) {
      if (viewer.pending.length === 0 && !viewer.terminal) { return; }
      var due = dueIn(viewer, now);
      if (due > 0) { again = Math.min(again, due); return; }
      viewer.lastFlush = now;
      applyPending(viewer);
    });
    scheduleFlush(again);
  }

  function chunkText(chunk) {
    return typeof chunk === "string" ? chunk : JSON.stringify(chunk) + "\n";
  }

  function applyPending(viewer) {
    var batch = viewer.pending;
    viewer.pending = [];
    var applied = [];
    var markdown = []; // render="markdown": every part's "md", re-delivered ones too (see drawMarkdown)
    var lastReceived = null;
    for (var k = 0; k < batch.length; k++) {
      var part = batch[k];
      var id = String(part.id);
      var cursor = { id: id, i: id.indexOf("-") === -1 ? 0 : (part.i || 0) };
      lastReceived = cursor.id;
      if (part.md) { markdown.push(part.md); }
      if (part.md && part.md.end) { continue; } // the stream's end: the tail as written, no part
      // Re-delivered parts (after a reconnect) are at or below the cursor: skip them.
      if (viewer.cursor && compareCursors(cursor, viewer.cursor) <= 0) { continue; }
      if (viewer.cursor && viewer.cursor.id !== cursor.id) { viewer.entryBefore = viewer.cursor.id; }
      viewer.cursor = cursor;
      applied.push({ id: cursor.id, chunk: part.chunk, timestamp: part.timestamp, html: part.html, text: part.text });
    }
    if (applied.length > 0 || markdown.length > 0) {
      if (draw(viewer, applied, markdown) === false) { return; } // resynchronising
    }
    if (lastReceived !== null && viewer.ackDue && viewer.subscribed) {
      viewer.ackDue = false;
      send({ type: "ack", sub: viewer.id, cursor: lastReceived });
    }
    if (viewer.terminal) {
      var terminal = viewer.terminal;
      viewer.terminal = null;
      if (terminal.type === "complete") { complete(viewer); } else { fail(viewer, terminal.status, terminal.message); }
    }
  }

  function draw(viewer, applied, markdown) {
    if (viewer.feed === "run") { drawRun(viewer, applied[applied.length - 1].chunk); return; }
    if (viewer.parts) { drawParts(viewer, applied); return; }
    if (viewer.markdown) { return drawMarkdown(viewer, applied, markdown); }
    var el = viewer.el;
    var output = child(el, "data-trigger-output") || el;
    var status = child(el, "data-trigger-status");
    var text = "";
    for (var k = 0; k < applied.length; k++) {
      var piece = chunkText(applied[k].chunk);
      emit(viewer, "trigger:data", { chunk: applied[k].chunk, part: applied[k], runId: viewer.runId, key: viewer.key });
      if (viewer.maxParts) {
        viewer.kept.push(piece);
        if (viewer.kept.length > viewer.maxParts) { viewer.kept.shift(); }
      } else {
        text += piece;
      }
    }
    viewer.partCount += applied.length;
    // Text only, never HTML: a stream is untrusted content.
    if (viewer.maxParts) {
      output.textContent = viewer.kept.join("");
    } else {
      output.appendChild(document.createTextNode(text));
    }
    if (status) { status.hidden = true; }
    emit(viewer, "trigger:parts", { parts: applied, runId: viewer.runId, key: viewer.key });
  }

  // --- markdown (render="markdown") ----------------------------------------------------------
  // The server renders the markdown (markdown-it-py) and sanitises it (nh3's allow-list) once
  // per stream; every part carries "md": {n, append, tail, seq}: the HTML of the top-level
  // blocks numbered n, n+1, … that became final, and the open tail's HTML, version seq. Only
  // this server-sanitised HTML is inserted; the streamed text itself never is.
  //
  // Cost per update stays flat however long the answer grows: frozen blocks go into groups of
  // about MD_GROUP_CHARS characters of HTML, each its own data-trigger-md-blocks container,
  // which the stylesheet gives content-visibility: auto, so that a group off screen costs no
  // style, layout or paint; a group is never touched again once the next one starts. An update
  // appends to the last group and replaces the tail's HTML, once per batch (the newest tail),
  // and reads nothing back from the layout. The containers are kept on the viewer, not looked
  // up in the (large) output on every update.
  var MD_GROUP_CHARS = 8000;
  // An update's cost (its DOM writes and the style, layout and paint of the frame they are in,
  // measured up to the first task after that frame) sets how often the next ones may come: at
  // most MD_BUDGET of the main thread, so the page stays responsive while a long answer
  // streams; a cheap update still happens every frame, a costly page updates less often, and
  // never less than every MD_MAX_INTERVAL ms. The last part is applied at once.
  var MD_BUDGET = 0.05;
  var MD_MAX_INTERVAL = 200;
  var afterFrame = null;
  if (typeof MessageChannel === "function") {
    afterFrame = new MessageChannel();
    afterFrame.port1.onmessage = function () {
      var waiting = afterFrame.waiting;
      afterFrame.waiting = [];
      var now = performance.now();
      for (var k = 0; k < waiting.length; k++) { measuredMarkdown(waiting[k].viewer, now - waiting[k].began); }
    };
    afterFrame.waiting = [];
  }

  function measureMarkdown(viewer, began) {
    if (!afterFrame || viewer.mdMeasuring) { return; }
    viewer.mdMeasuring = true;
    afterFrame.waiting.push({ viewer: viewer, began: began });
    if (afterFrame.waiting.length === 1) { afterFrame.port2.postMessage(null); }
  }

  function measuredMarkdown(viewer, cost) {
    viewer.mdMeasuring = false;
    viewer.mdCost = viewer.mdCost ? 0.7 * viewer.mdCost + 0.3 * cost : cost;
    viewer.mdInterval = Math.min(MD_MAX_INTERVAL, viewer.mdCost / MD_BUDGET);
  }

  function markdownGroup(output, tail) {
    var group = document.createElement("div");
    group.className = "trigger-md__blocks";
    group.setAttribute("data-trigger-md-blocks", "");
    output.insertBefore(group, tail);
    return group;
  }

  function markdownContainers(viewer) {
    var where = viewer.mdWhere;
    if (where && where.tail.parentNode === where.output && where.output.isConnected) { return where; }
    var output = child(viewer.el, "data-trigger-output") || viewer.el;
    var tail = output.lastElementChild;
    var group = tail && tail.previousElementSibling;
    if (!tail || !tail.hasAttribute("data-trigger-md-tail") || !group || !group.hasAttribute("data-trigger-md-blocks")) {
      output.textContent = "";
      tail = document.createElement("div");
      tail.className = "trigger-md__tail";
      tail.setAttribute("data-trigger-md-tail", "");
      output.appendChild(tail);
      group = markdownGroup(output, tail);
    }
    // Blocks from the page's first HTML fill their group: new ones start the next.
    where = { output: output, tail: tail, group: group, groupChars: group.firstChild ? MD_GROUP_CHARS : 0 };
    viewer.mdWhere = where;
    return where;
  }

  function insertHTML(parent, html) {
    var holder = document.createElement("template"); // inert: nothing in it runs or loads
    holder.innerHTML = html;
    parent.appendChild(holder.content);
  }

  function appendBlocks(where, blocks) {
    var k = 0;
    while (k < blocks.length) {
      if (where.groupChars >= MD_GROUP_CHARS) {
        where.group = markdownGroup(where.output, where.tail);
        where.groupChars = 0;
      }
      var html = "";
      while (k < blocks.length && where.groupChars < MD_GROUP_CHARS) {
        html += blocks[k];
        where.groupChars += blocks[k].length;
        k++;
      }
      insertHTML(where.group, html);
    }
  }

  // max_parts= keeps the last N blocks (paragraphs, lists, tables, code blocks…) and the tail.
  function trimMarkdown(where, maxParts) {
    var groups = [];
    var total = 0;
    for (var el = where.output.firstElementChild; el && el !== where.tail; el = el.nextElementSibling) {
      groups.push(el);
      total += el.childElementCount;
    }
    for (var g = 0; g < groups.length && total > maxParts; g++) {
      var group = groups[g];
      while (total > maxParts && group.firstElementChild) { group.removeChild(group.firstElementChild); total--; }
      // and the line breaks the removed blocks ended with
      while (group.firstChild && group.firstChild.nodeType !== 1) { group.removeChild(group.firstChild); }
      if (!group.firstChild && group !== where.group) { where.output.removeChild(group); }
    }
  }

  function drawMarkdown(viewer, applied, markdown) {
    var began = performance.now();
    var where = markdownContainers(viewer);
    for (var k = 0; k < applied.length; k++) {
      emit(viewer, "trigger:data", { chunk: applied[k].chunk, part: applied[k], runId: viewer.runId, key: viewer.key });
    }
    var blocks = [];
    var tail = null;
    for (var m = 0; m < markdown.length; m++) {
      var md = markdown[m];
      if (md.n > viewer.mdBlocks) {
        // Blocks missing: start over, once; should it happen again, show what came.
        if (!viewer.resynced) { viewer.resynced = true; resync(viewer); return false; }
        viewer.mdBlocks = md.n;
      }
      // Blocks this page holds already (re-delivered, or carried again) are skipped.
      for (var b = viewer.mdBlocks - md.n; b < md.append.length; b++) {
        blocks.push(md.append[b]);
        viewer.mdBlocks += 1;
      }
      // A tail older than the one shown (a replay while catching up) is not taken.
      if (md.seq >= viewer.mdSeq) { viewer.mdSeq = md.seq; tail = md.tail; }
    }
    if (blocks.length) { appendBlocks(where, blocks); }
    if (tail !== null && tail !== viewer.mdTail) { where.tail.innerHTML = tail; viewer.mdTail = tail; }
    if (viewer.maxParts && blocks.length) { trimMarkdown(where, viewer.maxParts); }
    if (blocks.length || tail !== null) { measureMarkdown(viewer, began); }
    viewer.partCount += applied.length;
    if (!viewer.mdShown && viewer.partCount > 0) {
      viewer.mdShown = true;
      var status = child(viewer.el, "data-trigger-status");
      if (status) { status.hidden = true; }
    }
    emit(viewer, "trigger:parts", { parts: applied, runId: viewer.runId, key: viewer.key });
    return true;
  }

  // The server's blocks do not follow on from this page's (a process that numbered them
  // otherwise): read the stream again from its start, into an empty output.
  function resync(viewer) {
    if (viewer.subscribed) { send({ type: "unsubscribe", sub: viewer.id }); }
    viewers.delete(viewer.id);
    viewer.id = "s" + nextSubscription++;
    viewers.set(viewer.id, viewer);
    viewer.subscribed = false;
    viewer.pending = [];
    viewer.ackDue = false;
    viewer.cursor = null;
    viewer.entryBefore = null;
    viewer.mdBlocks = 0;
    viewer.mdSeq = 0;
    viewer.mdTail = null;
    viewer.mdWhere = null;
    viewer.mdShown = false;
    viewer.partCount = 0;
    var output = child(viewer.el, "data-trigger-output") || viewer.el;
    output.textContent = "";
    markdownContainers(viewer);
    if (socket && socket.readyState === WebSocket.OPEN) { subscribe(viewer); }
  }

  // --- runs ({% run_status %}, {% run_viewer %}) ------------------------------------------------
  // A run subscription's parts are states of the run; the newest is shown. Everything from the
  // run goes in as text (badge, step, metadata as JSON, error).
  function drawRun(viewer, run) {
    var el = viewer.el;
    el.setAttribute("data-run-status", run.status);
    var badge = child(el, "data-trigger-badge");
    if (badge && badge.textContent !== run.label) { badge.textContent = run.label; }
    if (badge) { badge.setAttribute("data-tone", run.tone); }
    var wrap = child(el, "data-trigger-progress-wrap");
    var bar = child(el, "data-trigger-progress");
    var step = child(el, "data-trigger-step");
    if (wrap && bar && run.progress) {
      bar.value = run.progress.value;
      bar.textContent = run.progress.percent + "%";
      if (step) { step.textContent = (run.progress.step ? run.progress.step + " " : "") + run.progress.percent + "%"; }
      wrap.hidden = false;
    } else if (wrap && run.finished) {
      wrap.hidden = true;
    }
    var metadata = child(el, "data-trigger-metadata");
    var metadataWrap = child(el, "data-trigger-metadata-wrap");
    if (metadata && run.metadata !== null && run.metadata !== undefined) {
      metadata.textContent = JSON.stringify(run.metadata, null, 2);
      if (metadataWrap) { metadataWrap.hidden = false; }
    }
    var errorEl = child(el, "data-trigger-error");
    if (errorEl && run.error) { errorEl.textContent = run.error; errorEl.hidden = false; }
    if (el.hasAttribute("data-trigger-run-viewer")) { addRunStreams(viewer, run); }
    emit(viewer, "trigger:run", { run: run, runId: viewer.runId });
  }

  function addRunStreams(viewer, run) {
    var el = viewer.el;
    var container = child(el, "data-trigger-streams");
    if (!container) { return; }
    var wanted = el.dataset.streams ? el.dataset.streams.split(",") : null;
    (run.streams || []).forEach(function (key) {
      if (wanted && wanted.indexOf(key) === -1) { return; }
      var existing = container.children;
      for (var k = 0; k < existing.length; k++) { if (existing[k].dataset.key === key) { return; } }
      // A stream viewer like {% stream_viewer %}'s, on the run's ticket; the observer of this
      // script picks it up and subscribes it on the page's socket. The streams the run had when
      // the page was rendered are in its first HTML already, in this markup
      // (run_viewer_stream.html), with their cursors: they are adopted, not built again.
      var section = document.createElement("section");
      section.className = "trigger-stream trigger-run__stream";
      section.setAttribute("data-trigger-stream", "");
      section.setAttribute("data-state", "connecting");
      section.setAttribute("data-ticket", el.dataset.ticket);
      section.setAttribute("data-run-id", viewer.runId);
      section.setAttribute("data-key", key);
      section.setAttribute("data-render", "parts");
      if (el.dataset.throttleMs) { section.setAttribute("data-throttle-ms", el.dataset.throttleMs); }
      if (el.dataset.timeout) { section.setAttribute("data-timeout", el.dataset.timeout); }
      var heading = document.createElement("h2"); // under the page's h1: no skipped level
      heading.className = "trigger-run__stream-name";
      heading.textContent = key;
      var output = document.createElement("div");
      output.className = "trigger-stream__output";
      output.setAttribute("data-trigger-output", "");
      output.setAttribute("role", "log");
      output.setAttribute("aria-label", key);
      output.setAttribute("aria-busy", "true");
      var announceEl = document.createElement("p");
      announceEl.className = "trigger-stream__announce";
      announceEl.setAttribute("data-trigger-announce", "");
      announceEl.setAttribute("role", "status");
      var errorEl = document.createElement("p");
      errorEl.className = "trigger-stream__error";
      errorEl.setAttribute("data-trigger-error", "");
      errorEl.hidden = true;
      section.appendChild(heading);
      section.appendChild(output);
      section.appendChild(announceEl);
      section.appendChild(errorEl);
      container.appendChild(section);
    });
  }

  // Object parts: text (text-delta) is appended as text to the current text block; any other
  // part arrives as HTML that the server rendered with the part's Django template (autoescaped,
  // chosen by the template that rendered the page and signed into the ticket).
  function drawParts(viewer, applied) {
    var output = child(viewer.el, "data-trigger-output") || viewer.el;
    for (var k = 0; k < applied.length; k++) {
      var part = applied[k];
      emit(viewer, "trigger:data", { chunk: part.chunk, part: part, runId: viewer.runId, key: viewer.key });
      if (typeof part.html === "string") {
        var holder = document.createElement("template");
        holder.innerHTML = part.html;
        output.appendChild(holder.content);
        viewer.textBlock = null;
      } else {
        if (!viewer.textBlock) {
          viewer.textBlock = document.createElement("p");
          viewer.textBlock.className = "trigger-run__text";
          viewer.textBlock.setAttribute("data-trigger-text", "");
          output.appendChild(viewer.textBlock);
        }
        var text = typeof part.text === "string" ? part.text : chunkText(part.chunk);
        viewer.textBlock.appendChild(document.createTextNode(text));
      }
    }
    viewer.partCount += applied.length;
    emit(viewer, "trigger:parts", { parts: applied, runId: viewer.runId, key: viewer.key });
  }

  function complete(viewer) {
    viewer.done = true;
    var status = child(viewer.el, "data-trigger-status");
    if (status && viewer.partCount === 0) { status.textContent = "The stream ended without output."; status.hidden = false; }
    setState(viewer, "complete");
    announce(viewer, viewer.partCount === 0 ? "The stream ended without output." : "The stream is complete.");
    emit(viewer, "trigger:complete", { runId: viewer.runId, key: viewer.key, cursor: viewer.cursor && viewer.cursor.id });
    closeIfIdle();
  }

  function fail(viewer, status, message) {
    viewer.done = true;
    var statusEl = child(viewer.el, "data-trigger-status");
    if (statusEl) { statusEl.hidden = true; }
    var errorEl = child(viewer.el, "data-trigger-error");
    if (errorEl) { errorEl.textContent = message; errorEl.hidden = false; }
    setState(viewer, "error");
    announce(viewer, message);
    emit(viewer, "trigger:error", { status: status, message: message, runId: viewer.runId, key: viewer.key });
    closeIfIdle();
  }

  // --- wiring --------------------------------------------------------------------------------
  function start() {
    scan(document.documentElement);
    new MutationObserver(function (mutations) {
      var removed = false;
      for (var k = 0; k < mutations.length; k++) {
        var added = mutations[k].addedNodes;
        for (var n = 0; n < added.length; n++) { scan(added[n]); }
        if (mutations[k].removedNodes.length) { removed = true; }
      }
      if (removed) {
        viewers.forEach(function (viewer) { if (!viewer.el.isConnected) { removeViewer(viewer); } });
      }
    }).observe(document.documentElement, { childList: true, subtree: true });
    window.addEventListener("online", reconnectNow);
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible") { reconnectNow(); }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
