// A stand-in for a Kubernetes Service on the local control plane (there is no kube-proxy
// there): a TCP proxy that sends each new connection to the next ready endpoint of the
// Service, round robin, with no affinity, reading the Service's EndpointSlices with kubectl.
// Connections already made stay where they are when an endpoint goes away, as with kube-proxy.
//
//   node e2e/scenarios/service-proxy.mjs --service chat --port-name http --listen 127.0.0.1:4000
//     [--namespace default] [--kubectl PATH]
//
// Prints `listening on HOST:PORT` once bound; logs endpoint changes to stderr.
import net from "node:net";
import { parseArgs } from "node:util";
import { kubectlJson } from "./lib.mjs";

const { values: opt } = parseArgs({
  options: {
    service: { type: "string" },
    "port-name": { type: "string" },
    listen: { type: "string" },
    namespace: { type: "string", default: "default" },
    kubectl: { type: "string", default: process.env.KUBECTL ?? "kubectl" },
  },
});
if (!opt.service || !opt["port-name"] || !opt.listen) {
  console.error("usage: service-proxy.mjs --service NAME --port-name NAME --listen HOST:PORT");
  process.exit(2);
}
const [listenHost, listenPort] = splitHostPort(opt.listen);

function splitHostPort(s) {
  const i = s.lastIndexOf(":");
  return [s.slice(0, i).replace(/^\[|\]$/g, ""), Number(s.slice(i + 1))];
}

/** Ready endpoints ("ip:port") of the Service's EndpointSlices, sorted. */
function readyEndpoints(slices, portName) {
  const out = new Set();
  for (const slice of slices.items ?? []) {
    const port = (slice.ports ?? []).find((p) => p.name === portName)?.port;
    if (!port) continue;
    for (const ep of slice.endpoints ?? []) {
      if (ep.conditions?.ready !== true) continue;
      for (const addr of ep.addresses ?? []) out.add(`${addr}:${port}`);
    }
  }
  return [...out].sort();
}

let backends = [];
let next = 0;

async function refresh() {
  try {
    const slices = await kubectlJson(opt.kubectl, [
      "get", "endpointslices", "-n", opt.namespace,
      "-l", `kubernetes.io/service-name=${opt.service}`,
    ]);
    const now = readyEndpoints(slices, opt["port-name"]);
    if (now.join(" ") !== backends.join(" ")) {
      console.error(`service-proxy ${opt.service}: endpoints [${now.join(" ")}]`);
      backends = now;
    }
  } catch (err) {
    console.error(`service-proxy ${opt.service}: ${err.message}`);
  }
  setTimeout(refresh, 300);
}

/** Connects to the next backend that accepts, trying each once. */
function dial(attempt = 0) {
  return new Promise((resolve, reject) => {
    if (backends.length === 0 || attempt >= backends.length) {
      reject(new Error("no ready endpoint accepted the connection"));
      return;
    }
    const target = backends[next++ % backends.length];
    const [host, port] = splitHostPort(target);
    const upstream = net.connect({ host, port });
    upstream.setTimeout(2000, () => upstream.destroy(new Error("connect timeout")));
    upstream.once("connect", () => {
      upstream.setTimeout(0);
      resolve(upstream);
    });
    upstream.once("error", () => dial(attempt + 1).then(resolve, reject));
  });
}

const server = net.createServer((client) => {
  client.pause();
  dial().then(
    (upstream) => {
      client.pipe(upstream).pipe(client);
      client.resume();
      const close = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on("error", close).on("close", close);
      upstream.on("error", close).on("close", close);
    },
    () => client.destroy(),
  );
});

await refresh();
server.listen(listenPort, listenHost, () => {
  const a = server.address();
  console.log(`listening on ${a.address}:${a.port}`);
});
