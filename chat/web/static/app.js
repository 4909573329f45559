// The web client: log in, friends and groups, conversations, receipts.
//
// State lives in `state`; every change calls the render function of the part
// it touched.  The conversations are kept for as long as the page is open,
// across reconnects (a reconnect logs in again with the same credentials).

import { ChatConnection } from "./connection.js";
import { MsgId, describeError, now } from "./protocol.js";

const $ = (id) => document.getElementById(id);

const state = {
  credentials: null,  // {id} or {name}, and password: kept to log in again after a reconnect
  me: null,           // {id, name}
  friends: new Map(), // id -> {id, name, state}
  groups: new Map(),  // id -> {id, groupname, users}
  conversations: new Map(),  // "u:ID" or "g:ID" -> [{from, name, text, time, mine, mid, receipt}]
  unread: new Map(),
  byMid: new Map(),   // mid of a message I sent -> that message, for receipts
  current: null,      // key of the open conversation
};

const scheme = location.protocol === "https:" ? "wss" : "ws";
const connection = new ChatConnection(`${scheme}://${location.host}/ws`, {
  onOpen: () => {
    setStatus("online", "connected");
    if (state.credentials) logIn(state.credentials, true);
  },
  onClose: (delay, event) => {
    if (delay === null) {
      setStatus("offline", "offline");
      return;
    }
    const why = event.code === 1001 ? "the server went away" : "connection lost";
    setStatus("reconnecting", `${why}; reconnecting in ${(delay / 1000).toFixed(1)} s`);
  },
  onPush: (message) => onPush(message),
});

// -- notices and status ------------------------------------------------------

function notify(text, kind = "error") {
  const notice = $("notice");
  notice.textContent = text;
  notice.className = kind;
  notice.hidden = false;
}

function clearNotice() {
  $("notice").hidden = true;
}

function setStatus(kind, text) {
  const status = $("status");
  status.dataset.state = kind;
  status.textContent = text;
}

// -- account -------------------------------------------------------------------

function credentialsFrom(user, password) {
  const text = user.trim();
  // Digits are an id; anything else is a name (PROTOCOL.md allows both).
  return /^\d+$/.test(text) ? { id: Number(text), password } : { name: text, password };
}

async function logIn(credentials, again = false) {
  let reply;
  try {
    reply = await connection.request({ msgid: MsgId.LOGIN, ...credentials, ack: true });
  } catch {
    return;  // the connection dropped: onOpen logs in again
  }
  if (reply.errno === 2 && again) {
    // After a reconnect the server may not have seen the old socket go yet.
    setTimeout(() => { if (connection.isOpen) logIn(credentials, true); }, 1000);
    return;
  }
  if (reply.errno !== 0) {
    notify(describeError(reply));
    if (!again) state.credentials = null;
    return;
  }
  state.credentials = credentials;
  clearNotice();
  onLoggedIn(reply);
}

function onLoggedIn(ack) {
  state.me = { id: ack.id, name: ack.name };
  state.friends = new Map(ack.friends.map((f) => [f.id, f]));
  state.groups = new Map(ack.groups.map((g) => [g.id, g]));
  $("me").textContent = `${ack.name} (id ${ack.id})`;
  $("welcome").hidden = true;
  $("chat").hidden = false;
  $("logout").hidden = false;
  for (const message of ack.offlinemsg || []) onPush(message);
  renderLists();
  renderConversation();
}

async function register(name, password) {
  let reply;
  try {
    reply = await connection.request({ msgid: MsgId.REG, name, password });
  } catch {
    notify("Not connected to the server; try again in a moment.");
    return;
  }
  if (reply.errno !== 0) {
    notify(describeError(reply));
    return;
  }
  $("register-form").reset();
  await logIn({ id: reply.id, password });
  notify(`Registered: your id is ${reply.id}.`, "info");
}

async function logOut() {
  try {
    await connection.request({ msgid: MsgId.LOGOUT });
  } catch {
    // offline already: forgetting the credentials is what matters
  }
  state.credentials = null;
  state.me = null;
  state.conversations.clear();
  state.current = null;
  $("chat").hidden = true;
  $("welcome").hidden = false;
  $("logout").hidden = true;
  $("me").textContent = "";
}

// -- what the server pushes ------------------------------------------------------

function onPush(message) {
  switch (message.msgid) {
    case MsgId.ONE_CHAT:
      if (message.id === state.me?.id) return;
      markOnline(message.id, message.name);
      addMessage(`u:${message.id}`, received(message));
      break;
    case MsgId.GROUP_CHAT:
      addMessage(`g:${message.groupid}`, received(message));
      break;
    case MsgId.RECEIPT:
      setReceipt(state.byMid.get(message.mid), "received");
      break;
    case MsgId.ERROR:
      notify(describeError(message));
      break;
    default:
      break;
  }
}

function received(message) {
  return { from: message.id, name: message.name, text: message.msg, time: message.time,
           mine: false, mid: message.mid };
}

function markOnline(id, name) {
  const friend = state.friends.get(id);
  if (friend && friend.state !== "online") {
    friend.state = "online";
    renderLists();
  } else if (!friend && !state.conversations.has(`u:${id}`)) {
    state.friends.set(id, { id, name, state: "online", stranger: true });
    renderLists();
  }
}

function addMessage(key, message) {
  if (!state.conversations.has(key)) state.conversations.set(key, []);
  state.conversations.get(key).push(message);
  if (key === state.current) {
    renderConversation();
  } else {
    state.unread.set(key, (state.unread.get(key) || 0) + 1);
    renderLists();
  }
}

// -- sending -----------------------------------------------------------------------

async function sendText(text) {
  const [kind, id] = [state.current[0], Number(state.current.slice(2))];
  const request = kind === "u"
    ? { msgid: MsgId.ONE_CHAT, to: id, msg: text, time: now() }
    : { msgid: MsgId.GROUP_CHAT, groupid: id, msg: text, time: now() };
  const message = { from: state.me.id, name: state.me.name, text, time: request.time,
                    mine: true, receipt: "sending" };
  addMessage(state.current, message);
  let reply;
  try {
    reply = await connection.request(request);
  } catch {
    setReceipt(message, "failed", "not sent: the connection dropped");
    return;
  }
  if (reply.errno !== 0) {
    setReceipt(message, "failed", describeError(reply));
    return;
  }
  if (typeof reply.mid === "string") {  // the connection keeps mids as their digits
    message.mid = reply.mid;
    state.byMid.set(reply.mid, message);
  }
  setReceipt(message, reply.state || "delivered");
}

function setReceipt(message, receipt, why = "") {
  if (!message) return;
  message.receipt = receipt;
  message.why = why;
  renderConversation();
}

async function befriend(id) {
  const reply = await connection.request({ msgid: MsgId.ADD_FRIEND, friendid: id });
  if (reply.errno !== 0) return notify(describeError(reply));
  state.friends.set(reply.friend.id, reply.friend);
  renderLists();
}

async function createGroup(groupname) {
  const reply = await connection.request({ msgid: MsgId.CREATE_GROUP, groupname, groupdesc: "" });
  if (reply.errno !== 0) return notify(describeError(reply));
  state.groups.set(reply.groupid, { id: reply.groupid, groupname, users: [] });
  notify(`Group "${groupname}" created: its id is ${reply.groupid}.`, "info");
  renderLists();
}

async function joinGroup(id) {
  const reply = await connection.request({ msgid: MsgId.ADD_GROUP, groupid: id });
  if (reply.errno !== 0) return notify(describeError(reply));
  if (!state.groups.has(id)) state.groups.set(id, { id, groupname: `group ${id}`, users: [] });
  renderLists();
}

// -- rendering ------------------------------------------------------------------------

function listItem(key, label, online) {
  const item = document.createElement("li");
  item.dataset.key = key;
  item.className = key === state.current ? "active" : "";
  const dot = document.createElement("span");
  dot.className = online === null ? "" : `dot${online ? " online" : ""}`;
  const name = document.createElement("span");
  name.textContent = label;
  item.append(dot, name);
  const unread = state.unread.get(key);
  if (unread) {
    const badge = document.createElement("span");
    badge.className = "unread";
    badge.textContent = String(unread);
    item.append(badge);
  }
  item.addEventListener("click", () => openConversation(key));
  return item;
}

function renderLists() {
  $("friends").replaceChildren(...[...state.friends.values()].map((f) =>
    listItem(`u:${f.id}`, `${f.name} (${f.id})`, f.state === "online")));
  $("groups").replaceChildren(...[...state.groups.values()].map((g) =>
    listItem(`g:${g.id}`, `${g.groupname} (${g.id})`, null)));
}

const RECEIPT_MARKS = { sending: "…", stored: "✓", delivered: "✓", received: "✓✓", failed: "!" };
const RECEIPT_WORDS = { sending: "sending", stored: "stored: delivered at their next login",
                        delivered: "delivered", received: "received", failed: "not sent" };

function renderConversation() {
  const key = state.current;
  const list = $("messages");
  if (!key) {
    list.replaceChildren();
    return;
  }
  list.replaceChildren(...(state.conversations.get(key) || []).map((m) => {
    const item = document.createElement("li");
    item.className = m.mine ? `mine ${m.receipt}` : "";
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = `${m.mine ? "me" : m.name} · ${m.time}`;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = m.text;
    item.append(meta, text);
    if (m.mine) {
      const receipt = document.createElement("span");
      receipt.className = "receipt";
      receipt.dataset.receipt = m.receipt;
      receipt.textContent = RECEIPT_MARKS[m.receipt];
      receipt.title = m.why || RECEIPT_WORDS[m.receipt];
      item.append(receipt);
    }
    return item;
  }));
  list.scrollTop = list.scrollHeight;
}

function openConversation(key) {
  state.current = key;
  state.unread.delete(key);
  const id = Number(key.slice(2));
  const peer = key[0] === "u" ? state.friends.get(id) : state.groups.get(id);
  $("peer-title").textContent = peer ? (peer.name || peer.groupname) : key;
  $("message-text").disabled = false;
  $("send").disabled = false;
  $("chat").classList.add("talking");
  renderLists();
  renderConversation();
  $("message-text").focus();
}

// -- wiring ---------------------------------------------------------------------------------

function onSubmit(id, handler) {
  $(id).addEventListener("submit", (event) => {
    event.preventDefault();
    if (!connection.isOpen) {
      notify("Not connected to the server; reconnecting…");
      return;
    }
    handler(event.target);
  });
}

onSubmit("login-form", () =>
  logIn(credentialsFrom($("login-user").value, $("login-password").value)));
onSubmit("register-form", () => register($("register-name").value.trim(),
                                         $("register-password").value));
onSubmit("add-friend-form", (form) => { befriend(Number($("friend-id").value)); form.reset(); });
onSubmit("create-group-form", (form) => { createGroup($("group-name").value.trim()); form.reset(); });
onSubmit("join-group-form", (form) => { joinGroup(Number($("group-id").value)); form.reset(); });
onSubmit("send-form", () => {
  const text = $("message-text").value;
  if (!text || !state.current) return;
  $("message-text").value = "";
  sendText(text);
});
$("logout").addEventListener("click", () => logOut());
$("back").addEventListener("click", () => $("chat").classList.remove("talking"));

connection.start();
