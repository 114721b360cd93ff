// Herald's admin page: a plain page over the HTTP API on this port. The
// API token is typed in and kept for this tab only (sessionStorage); it
// goes out as a Bearer header, never in a URL.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "herald-api-token";

function token() {
  return sessionStorage.getItem(KEY) || "";
}

function say(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function call(method, body) {
  const response = await fetch("/v1/" + method, {
    method: "POST",
    headers: { "authorization": "Bearer " + token(), "content-type": "application/json" },
    body: JSON.stringify(body || {}),
  });
  const answer = await response.json();
  if (!response.ok) {
    const message = answer.message || answer.error || response.status;
    throw new Error(method + ": " + message);
  }
  return answer;
}

function show(answer) {
  $("answer").textContent = JSON.stringify(answer, null, 2);
}

function rows(tbody, items, cells) {
  tbody.replaceChildren(...items.map((item) => {
    const tr = document.createElement("tr");
    for (const value of cells(item)) {
      const td = document.createElement("td");
      td.textContent = value;
      tr.append(td);
    }
    return tr;
  }));
}

async function refresh() {
  if (!token()) return;
  try {
    const stats = await call("stats");
    $("connections").textContent = stats.connections;
    $("users-online").textContent = stats.usersOnline;
    rows($("edges"), stats.edges, (e) => [e.node, e.connections]);
    say("Connected.");
  } catch (e) {
    say(e.message, true);
  }
}

async function listTopics() {
  const answer = await call("topics", { prefix: $("prefix").value });
  rows($("topics"), answer.topics, (t) => [t.topic, t.streams, t.edges]);
}

async function lookUp() {
  const answer = await call("presence", { userIds: [$("user").value] });
  const user = answer.users[0];
  $("presence").textContent = user.online
    ? user.connections + " streams on " + user.edges.length + " edges"
    : "offline";
  rows($("user-edges"), user.edges, (e) => [e.node, e.connections]);
}

function act(button, work) {
  $(button).addEventListener("click", async () => {
    try {
      show(await work());
      await lookUp();
    } catch (e) {
      say(e.message, true);
    }
  });
}

function onSubmit(form, work) {
  $(form).addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await work();
    } catch (e) {
      say(e.message, true);
    }
  });
}

onSubmit("login", async () => {
  sessionStorage.setItem(KEY, $("token").value);
  $("token").value = "";
  await refresh();
});
$("forget").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  say("Token forgotten.");
});
onSubmit("topics-form", listTopics);
onSubmit("user-form", lookUp);
onSubmit("publish-form", async () => {
  const request = {
    event: $("event").value,
    data: $("data").value,
    ephemeral: !$("persisted").checked,
  };
  if ($("target-kind").value === "topic") {
    request.topic = $("target").value;
  } else {
    request.users = { userIds: [$("target").value] };
  }
  show(await call("publish", request));
});
const user = () => [$("user").value];
act("disconnect", () => call("disconnect", { userIds: user(), reason: $("reason").value }));
act("revoke", () => call("revoke", { userIds: user(), reason: $("reason").value }));
act("follow", () => call("follow", { userIds: user(), topics: [$("follow-topic").value] }));
act("unfollow", () => call("unfollow", { userIds: user(), topics: [$("follow-topic").value] }));

refresh();
setInterval(refresh, 5000);
