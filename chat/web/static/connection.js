// One WebSocket to the chat server, reopened with backoff when it goes away.
//
// Requests that expect a reply carry a "seq" (PROTOCOL.md: every reply to a
// request carries its seq) and get a promise of that reply; everything else
// the server sends is handed to onPush.  Acknowledged delivery lives here
// too: the ids ("mid") of chat messages are acknowledged in batches, and a
// message seen before (delivered again after a reconnect) is dropped.

import { MsgId } from "./protocol.js";

const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10000;
const MID_DIGITS = /"mid":(\d+)/;  // the server writes keys without spaces (orjson)
const MID_TEXT = /^\d+$/;
const ACK_EVERY = 32;      // well under the server's --ack-window (256)
const ACK_AFTER_MS = 200;  // a quiet moment: acknowledge what came

export class ChatConnection {
  constructor(url, { onOpen, onClose, onPush }) {
    this.url = url;
    this.onOpen = onOpen;
    this.onClose = onClose;
    this.onPush = onPush;
    this.socket = null;
    this.seq = 0;
    this.waiting = new Map();  // seq -> {resolve, reject}
    this.backoff = BACKOFF_FIRST_MS;
    this.stopped = true;
    this.seenMids = new Set();
    this.unacked = null;  // the highest mid received and not acknowledged yet
    this.unackedCount = 0;
    this.ackTimer = null;
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    if (this.socket) this.socket.close(1000, "bye");
  }

  open() {
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.onopen = () => {
      this.backoff = BACKOFF_FIRST_MS;
      this.unacked = null;
      this.unackedCount = 0;
      this.onOpen();
    };
    socket.onmessage = (event) => this.receive(event.data);
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      for (const { reject } of this.waiting.values()) reject(new Error("connection lost"));
      this.waiting.clear();
      clearTimeout(this.ackTimer);
      if (this.stopped) {
        this.onClose(null, event);
        return;
      }
      // Jitter spreads the reconnects of many pages after a server restart.
      const delay = Math.min(this.backoff, BACKOFF_MAX_MS) * (0.75 + Math.random() / 2);
      this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
      this.onClose(delay, event);
      setTimeout(() => { if (!this.stopped) this.open(); }, delay);
    };
  }

  get isOpen() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  send(message) {
    if (!this.isOpen) throw new Error("not connected");
    this.socket.send(JSON.stringify(message));
  }

  // Send a request and wait for the reply that carries its seq.
  request(message) {
    const seq = ++this.seq;
    return new Promise((resolve, reject) => {
      this.waiting.set(seq, { resolve, reject });
      try {
        this.send({ ...message, seq });
      } catch (error) {
        this.waiting.delete(seq);
        reject(error);
      }
    });
  }

  receive(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;  // the server sends JSON only; nothing sensible to do with the rest
    }
    // A mid is a 63-bit integer: past 2^53 a JavaScript number would round it,
    // and an acknowledgement would name another message. Kept as its digits.
    if (typeof message.mid === "number") {
      const digits = MID_DIGITS.exec(text);
      if (digits) message.mid = digits[1];
    }
    const pending = message.seq !== undefined && this.waiting.get(message.seq);
    if (pending) {
      this.waiting.delete(message.seq);
      pending.resolve(message);
      return;
    }
    if ((message.msgid === MsgId.ONE_CHAT || message.msgid === MsgId.GROUP_CHAT) &&
        typeof message.mid === "string") {
      this.noteDelivered(message.mid);
      if (this.seenMids.has(message.mid)) return;  // a repeat after a reconnect
      this.seenMids.add(message.mid);
    }
    this.onPush(message);
  }

  // Acknowledge in batches: one DELIVERY_ACK covers every message up to its mid.
  noteDelivered(mid) {
    this.unacked = mid;
    this.unackedCount += 1;
    if (this.unackedCount >= ACK_EVERY) {
      this.flushAcks();
    } else if (this.ackTimer === null) {
      this.ackTimer = setTimeout(() => this.flushAcks(), ACK_AFTER_MS);
    }
  }

  flushAcks() {
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (this.unacked === null || !this.isOpen) return;
    if (!MID_TEXT.test(this.unacked)) return;
    // Written by hand: JSON.stringify has no exact form for a 63-bit number.
    this.socket.send(`{"msgid":${MsgId.DELIVERY_ACK},"mid":${this.unacked}}`);
    this.unacked = null;
    this.unackedCount = 0;
  }
}
