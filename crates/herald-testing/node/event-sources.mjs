// Many WHATWG EventSources (npm's `eventsource`, as Node apps use it), one
// per URL. Reads a JSON array of URLs as its first stdin line, then writes
// one JSON line per happening on stdout:
//   {"c": 3, "open": true}                       a stream opened
//   {"c": 3, "id": "...", "data": "..."}         an event
//   {"c": 3, "error": true, "state": 0}          an error (state 2: closed for good)
// A stdin line "report" answers {"states": [readyState, ...]}; stdin's end
// closes every stream and exits.
import { createInterface } from "node:readline";
import { EventSource } from "eventsource";

const say = (line) => process.stdout.write(JSON.stringify(line) + "\n");
const sources = [];

function open(url, c) {
  const source = new EventSource(url);
  source.onopen = () => say({ c, open: true });
  source.onmessage = (e) => say({ c, id: e.lastEventId, data: e.data });
  source.onerror = () => say({ c, error: true, state: source.readyState });
  return source;
}

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (sources.length === 0) {
    JSON.parse(line).forEach((url, c) => sources.push(open(url, c)));
  } else if (line === "report") {
    say({ states: sources.map((s) => s.readyState) });
  }
});
lines.on("close", () => {
  sources.forEach((s) => s.close());
  process.exit(0);
});
