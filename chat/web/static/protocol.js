// The wire protocol's ids and error numbers (PROTOCOL.md), as chat/protocol.py has them.

export const MsgId = Object.freeze({
  LOGIN: 1, LOGIN_ACK: 2, REG: 3, REG_ACK: 4, ONE_CHAT: 5, ADD_FRIEND: 6,
  CREATE_GROUP: 7, ADD_GROUP: 8, GROUP_CHAT: 9, LOGOUT: 10, ADD_FRIEND_ACK: 11,
  CREATE_GROUP_ACK: 12, ADD_GROUP_ACK: 13, LOGOUT_ACK: 14, ERROR: 15, CHAT_ACK: 16,
  DELIVERY_ACK: 17, RECEIPT: 18,
});

const ERRNO_WORDS = {
  1: "Wrong name, id or password (or, when registering, the name is taken).",
  2: "This account is already online somewhere else.",
  3: "Please log in first.",
  4: "The server did not understand that request.",
  5: "No such user or group.",
  6: "That is not allowed.",
  7: "That message is too large.",
  8: "A group with that name already exists.",
  9: "The server could not do that just now; try again.",
};

// A reply with a non-zero errno, in words a person can act on.
export function describeError(reply) {
  const words = ERRNO_WORDS[reply.errno] || `Error ${reply.errno}.`;
  return reply.errmsg ? `${words} (${reply.errmsg})` : words;
}

// "YYYY-MM-DD HH:MM:SS", the server's own format for chat times.
export function now() {
  const d = new Date();
  const two = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ` +
    `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}
