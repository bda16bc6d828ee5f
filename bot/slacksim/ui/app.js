// The demo page: a Slack-like view of the local workspace. It renders
// Block Kit, threads and ephemeral messages, sends slash commands and button
// clicks as the chosen user, and follows changes over a websocket.
"use strict";

const state = { users: [], channels: [], messages: new Map(), views: new Map(), me: null, channel: null, thread: null, bot: null, connections: 0,
  seen: new Map() }; // channel → messages read there
const $ = (id) => document.getElementById(id);

const EMOJI = {
  lock: "🔒", unlock: "🔓", rocket: "🚀", white_check_mark: "✅", warning: "⚠️", no_entry: "⛔", recycle: "♻️",
  x: "❌", hourglass: "⏳", memo: "📝", fire: "🔥", rotating_light: "🚨", key: "🔑", eyes: "👀", tada: "🎉",
  hourglass_flowing_sand: "⏳",
};
const COLORS = ["#2bac76", "#e8912d", "#1264a3", "#9b5fc0", "#e01e5a", "#36c5f0", "#616061"];

function key(m) { return m.channel + "/" + m.ts; }
function user(id) { return state.users.find((u) => u.id === id); }
function userName(id) {
  if (state.bot && id === state.bot.id) return "twokey";
  const u = user(id);
  return u ? u.name : id;
}
function colorOf(id) {
  if (state.bot && id === state.bot.id) return "#1f1633";
  let h = 0;
  for (const c of id) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return COLORS[h % COLORS.length];
}
function avatar(id, big) {
  const el = document.createElement("span");
  el.className = "avatar" + (big ? " big" : "");
  el.style.background = colorOf(id);
  el.textContent = (state.bot && id === state.bot.id) ? "2k" : userName(id).slice(0, 1).toUpperCase();
  return el;
}
function esc(s) {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}
function unescapeSlack(s) { return s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&"); }

// mrkdwn renders Slack's markup to HTML: control sequences (<@U…>, <#C…>,
// <url|text>), code, bold, italic, strike, emoji and line breaks.
function mrkdwn(src) {
  const parts = src.split("```");
  return parts.map((part, i) => {
    if (i % 2 === 1) return "<pre>" + esc(unescapeSlack(part.replace(/^\n/, ""))) + "</pre>";
    return inline(part);
  }).join("");
}
function inline(src) {
  let out = "";
  const re = /<([^<>]+)>/g;
  let last = 0, m;
  while ((m = re.exec(src))) {
    out += text(src.slice(last, m.index));
    out += control(m[1]);
    last = re.lastIndex;
  }
  return out + text(src.slice(last));
}
function control(c) {
  if (c.startsWith("@")) return '<span class="mention">@' + esc(userName(c.slice(1).split("|")[0])) + "</span>";
  if (c.startsWith("#")) {
    const [id, label] = c.slice(1).split("|");
    const ch = state.channels.find((x) => x.id === id);
    return '<span class="mention">#' + esc(label || (ch ? ch.name : id)) + "</span>";
  }
  if (c.startsWith("!")) return '<span class="mention">@' + esc(c.slice(1).split("|")[0]) + "</span>";
  const [url, label] = c.split("|");
  return '<a href="' + esc(url) + '" target="_blank" rel="noopener">' + esc(unescapeSlack(label || url)) + "</a>";
}
function text(s) {
  const codes = [];
  let h = esc(unescapeSlack(s)).replace(/`([^`\n]+)`/g, (_, c) => { codes.push(c); return "\u0000" + (codes.length - 1) + "\u0000"; });
  h = h.replace(/(^|[\s(])\*([^*\n]+)\*(?=$|[\s).,:;!?])/g, "$1<b>$2</b>")
    .replace(/(^|[\s(])_([^_\n]+)_(?=$|[\s).,:;!?])/g, "$1<i>$2</i>")
    .replace(/(^|[\s(])~([^~\n]+)~(?=$|[\s).,:;!?])/g, "$1<s>$2</s>")
    .replace(/:([a-z0-9_+-]+):/g, (all, name) => EMOJI[name] || all)
    .split("\n").map((line) => line.startsWith("&gt;") ? '<span class="quote">' + line.slice(4) + "</span>" : line).join("<br>");
  return h.replace(/\u0000(\d+)\u0000/g, (_, i) => "<code>" + codes[+i] + "</code>");
}
function textObject(t) {
  if (!t) return "";
  return t.type === "mrkdwn" ? mrkdwn(t.text) : esc(t.text).replace(/\n/g, "<br>");
}

function renderBlocks(m) {
  const wrap = document.createElement("div");
  if (!m.blocks || !m.blocks.length) {
    if (!m.text) return wrap;
    const b = document.createElement("div");
    b.className = "block";
    b.innerHTML = mrkdwn(m.text || "");
    wrap.appendChild(b);
    return wrap;
  }
  for (const block of m.blocks) {
    const el = document.createElement("div");
    el.className = "block " + block.type;
    switch (block.type) {
      case "header":
        el.textContent = block.text.text;
        break;
      case "section":
        if (block.text) el.innerHTML = textObject(block.text);
        if (block.fields) {
          const f = document.createElement("div");
          f.className = "fields";
          for (const field of block.fields) {
            const d = document.createElement("div");
            d.innerHTML = textObject(field);
            f.appendChild(d);
          }
          el.appendChild(f);
        }
        el.innerHTML = el.innerHTML.replace(/⚠ (DESTROY|REPLACE[^<\n]*)/g, '<span class="destroy">⚠ $1</span>');
        break;
      case "context":
        for (const e of block.elements || []) {
          const s = document.createElement("span");
          s.innerHTML = e.type === "image" ? "" : textObject(e);
          el.appendChild(s);
        }
        break;
      case "divider":
        break;
      case "actions":
        el.className = "block actions";
        for (const e of block.elements || []) {
          if (e.type !== "button") continue;
          const btn = document.createElement("button");
          btn.className = "btn" + (e.style ? " " + e.style : "");
          btn.textContent = e.text.text;
          btn.dataset.action = e.action_id;
          btn.onclick = () => click(m, e.action_id, btn);
          el.appendChild(btn);
        }
        break;
      default:
        continue;
    }
    wrap.appendChild(el);
  }
  return wrap;
}

function visible(m) { return !m.ephemeral || m.for === state.me; }
function timeOf(ts) {
  const d = new Date(parseFloat(ts) * 1000);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}
function ordered(list) { return list.sort((a, b) => (a.ts < b.ts ? -1 : a.ts > b.ts ? 1 : 0)); }

function renderMessage(m, inThread) {
  const row = document.createElement("div");
  row.className = "msg" + (m.ephemeral ? " ephemeral" : "");
  row.dataset.ts = m.ts;
  row.appendChild(avatar(m.user, true));
  const body = document.createElement("div");
  body.className = "msg-body";
  if (m.ephemeral) {
    const o = document.createElement("div");
    o.className = "only-you";
    o.textContent = "👁 Only visible to you";
    body.appendChild(o);
  }
  const head = document.createElement("div");
  head.className = "msg-head";
  head.innerHTML = '<span class="msg-author">' + esc(userName(m.user)) + "</span>" +
    (state.bot && m.user === state.bot.id ? '<span class="app-badge">App</span>' : "") +
    '<span class="msg-time">' + timeOf(m.ts) + "</span>" + (m.edits ? '<span class="edited">(edited)</span>' : "");
  body.appendChild(head);
  body.appendChild(renderBlocks(m));
  for (const f of m.files || []) {
    const a = document.createElement("a");
    a.className = "file";
    a.href = "api/files/" + encodeURIComponent(f.id);
    a.target = "_blank";
    a.rel = "noopener";
    a.innerHTML = '<span class="file-icon">📄</span><span><span class="file-title"></span><span class="file-meta"></span></span>';
    a.querySelector(".file-title").textContent = f.title || f.name;
    a.querySelector(".file-meta").textContent = f.name + " · " + (f.size >= 1024 ? Math.round(f.size / 1024) + " KB" : f.size + " B");
    body.appendChild(a);
  }
  if (!inThread) {
    const replies = [...state.messages.values()].filter((r) => r.channel === m.channel && r.thread_ts === m.ts && visible(r));
    if (replies.length) {
      const a = document.createElement("div");
      a.className = "replies";
      a.textContent = replies.length + (replies.length === 1 ? " reply" : " replies");
      a.onclick = () => openThread(m);
      body.appendChild(a);
    }
  }
  row.appendChild(body);
  return row;
}

// The modal on the current user's screen, if any: Block Kit inputs (plain
// text, multi-line, static select), with the errors of the last submission.
function renderModal() {
  const overlay = $("modal");
  const v = [...state.views.values()].find((x) => x.user === state.me);
  if (!v) { overlay.hidden = true; overlay.dataset.view = ""; return; }
  if (overlay.dataset.view === v.id && overlay.dataset.errors === JSON.stringify(v.errors || {})) return;
  const keep = overlay.dataset.view === v.id ? readModal() : {};
  overlay.dataset.view = v.id;
  overlay.dataset.errors = JSON.stringify(v.errors || {});
  overlay.hidden = false;
  $("modal-title").textContent = v.title;
  $("modal-submit").textContent = v.submit || "Submit";
  $("modal-submit").hidden = !v.submit;
  $("modal-close").textContent = v.close || "Cancel";
  const body = $("modal-body");
  body.replaceChildren();
  for (const block of v.blocks || []) {
    if (block.type !== "input") {
      body.appendChild(renderBlocks({ blocks: [block] }));
      continue;
    }
    const field = document.createElement("label");
    field.className = "field";
    const label = document.createElement("div");
    label.className = "field-label";
    label.textContent = block.label.text + (block.optional ? " (optional)" : "");
    field.appendChild(label);
    const e = block.element;
    let input;
    if (e.type === "static_select") {
      input = document.createElement("select");
      input.appendChild(new Option(e.placeholder ? e.placeholder.text : "Choose…", ""));
      for (const o of e.options || []) input.appendChild(new Option(o.text.text, o.value));
    } else if (e.multiline) {
      input = document.createElement("textarea");
      input.rows = 3;
    } else {
      input = document.createElement("input");
    }
    if (e.placeholder && input.tagName !== "SELECT") input.placeholder = e.placeholder.text;
    if (e.max_length) input.maxLength = e.max_length;
    input.name = block.block_id;
    input.value = keep[block.block_id] || "";
    field.appendChild(input);
    if (block.hint) {
      const h = document.createElement("div");
      h.className = "field-hint";
      h.textContent = block.hint.text;
      field.appendChild(h);
    }
    const err = (v.errors || {})[block.block_id];
    if (err) {
      const x = document.createElement("div");
      x.className = "field-error";
      x.innerHTML = mrkdwn(err);
      field.appendChild(x);
    }
    body.appendChild(field);
  }
  $("modal-error").textContent = "";
}
function readModal() {
  const values = {};
  for (const el of $("modal-body").querySelectorAll("input, textarea, select")) {
    if (el.value !== "") values[el.name] = el.value;
  }
  return values;
}
$("modal-form").onsubmit = async (ev) => {
  ev.preventDefault();
  const id = $("modal").dataset.view;
  try {
    await post("api/submit", { user: state.me, view_id: id, values: readModal() });
  } catch (e) {
    $("modal-error").textContent = e.message;
  }
};
$("modal-close").onclick = () => post("api/close", { user: state.me, view_id: $("modal").dataset.view }).catch(() => {});

function shownIn(channel) { return [...state.messages.values()].filter((m) => m.channel === channel && !m.thread_ts && visible(m)).length; }
function unreadIn(channel) { return Math.max(0, shownIn(channel) - (state.seen.get(state.me + "/" + channel) || 0)); }

// render redraws what changed: the channel's messages, the thread, the
// sidebar and the modal.
function render() {
  state.seen.set(state.me + "/" + state.channel, shownIn(state.channel));
  renderList();
  renderThread();
  renderSidebar();
  renderModal();
}

// reconcile makes container's children the given items, in order. An item
// whose key and signature are unchanged keeps its element, untouched: a
// click on it is never lost to a redraw.
function reconcile(container, items) {
  const old = container._items || new Map();
  const next = new Map();
  items.forEach((it, i) => {
    let cur = old.get(it.key);
    if (!cur || cur.sig !== it.sig) cur = { sig: it.sig, el: it.build() };
    next.set(it.key, cur);
    if (container.children[i] !== cur.el) container.insertBefore(cur.el, container.children[i] || null);
  });
  while (container.children.length > items.length) container.lastChild.remove();
  container._items = next;
}

function renderList() {
  const list = $("messages");
  const top = ordered([...state.messages.values()].filter((m) => m.channel === state.channel && !m.thread_ts && visible(m)));
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const items = top.map((m) => {
    const replies = [...state.messages.values()].filter((r) => r.channel === m.channel && r.thread_ts === m.ts && visible(r)).length;
    return { key: key(m) + "/" + state.me, sig: m.seq + ":" + replies, build: () => renderMessage(m, false) };
  });
  if (!top.length) {
    const text = isDM(state.channel) ? "twokey writes here when it has something for you alone: a break-glass token, say."
      : "No messages yet. Type <code>/tf plan staging pr-1</code> below.";
    items.push({ key: "empty", sig: text, build: () => {
      const e = document.createElement("div");
      e.className = "empty";
      e.innerHTML = text;
      return e;
    } });
  }
  reconcile(list, items);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function renderThread() {
  const pane = $("thread");
  if (!state.thread) { pane.hidden = true; return; }
  const root = state.messages.get(state.thread);
  if (!root) { pane.hidden = true; return; }
  pane.hidden = false;
  $("thread-sub").textContent = "#" + channelName(root.channel);
  const list = $("thread-messages");
  list.replaceChildren(renderMessage(root, true));
  const replies = ordered([...state.messages.values()].filter((r) => r.channel === root.channel && r.thread_ts === root.ts && visible(r)));
  for (const r of replies) list.appendChild(renderMessage(r, true));
  list.scrollTop = list.scrollHeight;
}

// dm is the channel of the current user's direct messages with twokey.
function dm(userID) { return "D" + (userID || "").replace(/^U/, ""); }
function isDM(id) { return id && id.startsWith("D"); }
function channelName(id) {
  if (isDM(id)) return "twokey";
  const c = state.channels.find((x) => x.id === id);
  return c ? c.name : id;
}
function channelTitle(id) { return isDM(id) ? "✉ twokey (direct messages)" : "# " + channelName(id); }
function showChannel(id) {
  state.channel = id;
  state.thread = null;
  $("channel-name").textContent = channelTitle(id);
  $("composer-input").placeholder = isDM(id) ? "Message twokey — try /tf help" : "Message #" + channelName(id) + " — try /tf plan staging pr-1";
  render();
}

// navItem is a sidebar entry; setNav updates one in place, so a click on
// it is never lost to a redraw.
function navItem(label, onclick, data) {
  const item = document.createElement("div");
  item.className = "nav-item";
  Object.assign(item.dataset, data);
  if (typeof label === "string") item.textContent = label;
  else item.append(...label);
  const b = document.createElement("span");
  b.className = "count";
  b.hidden = true;
  item.appendChild(b);
  item.onclick = onclick;
  return item;
}
function setNav(item, active, count) {
  item.classList.toggle("active", active);
  const b = item.querySelector(".count");
  b.hidden = !count;
  b.textContent = count || "";
}

function renderSidebar() {
  const ch = $("channels");
  reconcile(ch, state.channels.map((c) => ({ key: c.id, sig: c.name, build: () => navItem("# " + c.name, () => showChannel(c.id), { channel: c.name }) })));
  state.channels.forEach((c, i) => setNav(ch.children[i], c.id === state.channel, c.id === state.channel ? 0 : unreadIn(c.id)));
  const mine = dm(state.me);
  const dms = $("dms");
  reconcile(dms, state.me ? [{ key: "dm", sig: "dm", build: () => navItem(
    [avatar(state.bot ? state.bot.id : ""), document.createTextNode("twokey")], () => showChannel(dm(state.me)), { channel: "dm" }) }] : []);
  if (state.me) setNav(dms.children[0], mine === state.channel, mine === state.channel ? 0 : unreadIn(mine));
  const us = $("users");
  reconcile(us, state.users.map((u) => ({ key: u.id, sig: u.name + u.title, build: () => {
    const role = document.createElement("span");
    role.className = "role";
    role.textContent = u.title || "";
    const name = document.createElement("span");
    name.textContent = u.name;
    return navItem([avatar(u.id), name, role], () => {
      if (isDM(state.channel)) state.channel = dm(u.id);
      state.me = u.id;
      localStorage.setItem("twokey-demo-user", u.id);
      showChannel(state.channel);
    }, { user: u.name });
  } })));
  state.users.forEach((u, i) => setNav(us.children[i], u.id === state.me, 0));
  const as = $("composer-as");
  if (as.dataset.user !== state.me) {
    as.dataset.user = state.me || "";
    as.replaceChildren(avatar(state.me || ""), document.createTextNode(userName(state.me || "")));
  }
  const conn = $("connection");
  conn.className = "connection" + (state.connections > 0 ? " up" : "");
  conn.textContent = state.connections > 0 ? "twokey connected" : "twokey offline";
}

function openThread(m) { state.thread = key(m); renderThread(); }
$("thread-close").onclick = () => { state.thread = null; renderThread(); };

async function post(path, body) {
  const res = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const out = await res.json().catch(() => ({}));
  if (!res.ok || out.error) throw new Error(out.error || res.statusText);
  return out;
}

async function click(m, action, btn) {
  btn.disabled = true;
  try {
    await post("api/click", { user: state.me, channel: m.channel, ts: m.ts, action_id: action });
  } catch (e) {
    $("composer-error").textContent = e.message;
  } finally {
    setTimeout(() => { btn.disabled = false; }, 400);
  }
}

$("composer").onsubmit = async (ev) => {
  ev.preventDefault();
  const input = $("composer-input");
  const textValue = input.value.trim();
  $("composer-error").textContent = "";
  if (!textValue) return;
  const m = textValue.match(/^\/tf(?:\s+([\s\S]*))?$/);
  if (!m) { $("composer-error").textContent = "This channel talks to twokey: start with /tf (try /tf help)."; return; }
  try {
    await post("api/command", { user: state.me, channel: state.channel, text: (m[1] || "").trim() });
    input.value = "";
  } catch (e) {
    $("composer-error").textContent = e.message;
  }
};

async function load() {
  const res = await fetch("api/state");
  const s = await res.json();
  state.users = s.users;
  state.channels = s.channels;
  state.bot = s.bot;
  state.connections = s.connections;
  state.messages = new Map(s.messages.map((m) => [key(m), m]));
  state.views = new Map((s.views || []).map((v) => [v.id, v]));
  state.channel = state.channel || (s.channels[0] && s.channels[0].id);
  const saved = localStorage.getItem("twokey-demo-user");
  state.me = state.me || (s.users.find((u) => u.id === saved) ? saved : s.users[0] && s.users[0].id);
  showChannel(state.channel);
}

function follow() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + location.pathname.replace(/[^/]*$/, "") + "api/events");
  ws.onmessage = (ev) => {
    const e = JSON.parse(ev.data);
    if (e.message) state.messages.set(key(e.message), e.message);
    if (e.view) {
      if (e.view.blocks) state.views.set(e.view.id, e.view);
      else state.views.delete(e.view.id);
    }
    if (typeof e.connections === "number") state.connections = e.connections;
    render();
  };
  ws.onclose = () => setTimeout(() => { load().then(follow, follow); }, 1000);
}

load().then(follow, (e) => { $("messages").textContent = "Could not load the workspace: " + e.message; });
