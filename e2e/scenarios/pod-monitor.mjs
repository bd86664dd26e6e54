// The scrape config a Prometheus Operator generates for a PodMonitor, for a plain Prometheus:
// the `monitoring` phase of run.mjs has no Prometheus Operator (no monitoring.coreos.com CRDs on
// the test API server), so it turns the chart's rendered PodMonitor into what the operator would
// give Prometheus: every pod's container ports as targets, kept to the selected pods' named port,
// labelled namespace/pod/container/endpoint/job as the operator does, then the PodMonitor's own
// relabelings (the chart's adds `hub`). Prometheus itself applies that selection and relabeling.
// Debian's Prometheus is built without Kubernetes discovery (kubernetes_sd_configs is not in its
// config schema), so the pods come from a file (file_sd_configs) that `podTargets` writes from
// the pods listed through the API server, with the meta labels Kubernetes pod discovery
// (role: pod) would give them.
// Covers what the chart's PodMonitor uses (matchLabels, namespaceSelector, one endpoint's port,
// path and relabelings); anything else in it is refused rather than silently ignored.

/** Prometheus' name for a Kubernetes label in discovery meta labels. */
const metaName = (label) => label.replace(/[^a-zA-Z0-9_]/g, "_");

const KNOWN_ENDPOINT_FIELDS = new Set(["port", "path", "interval", "relabelings"]);

/**
 * The target groups Kubernetes pod discovery (role: pod) gives for PODS (items of a pod list):
 * one per declared container port of every pod with an IP, with its __meta_kubernetes_* labels.
 */
export function podTargets(pods) {
  return pods.flatMap((pod) => {
    const ip = pod.status?.podIP;
    if (!ip) return [];
    const podLabels = {
      __meta_kubernetes_namespace: pod.metadata.namespace,
      __meta_kubernetes_pod_name: pod.metadata.name,
      __meta_kubernetes_pod_ip: ip,
      __meta_kubernetes_pod_phase: pod.status.phase ?? "",
      ...Object.fromEntries(Object.entries(pod.metadata.labels ?? {}).map(([k, v]) => [`__meta_kubernetes_pod_label_${metaName(k)}`, v])),
    };
    return pod.spec.containers.flatMap((c) =>
      (c.ports ?? []).map((port) => ({
        targets: [`${ip}:${port.containerPort}`],
        labels: {
          ...podLabels,
          __meta_kubernetes_pod_container_name: c.name,
          __meta_kubernetes_pod_container_port_name: port.name ?? "",
          __meta_kubernetes_pod_container_port_number: String(port.containerPort),
        },
      })),
    );
  });
}

/**
 * PM: the PodMonitor (parsed); SD_FILE: the file of `podTargets`; INTERVAL: the scrape interval
 * (the test's, shorter than the chart's). Throws on a PodMonitor field this translation does
 * not cover.
 */
export function podMonitorScrapeConfig(pm, { sdFile, interval }) {
  const { namespace, name } = pm.metadata;
  const endpoints = pm.spec.podMetricsEndpoints ?? [];
  if (endpoints.length !== 1) throw new Error(`PodMonitor ${name}: ${endpoints.length} endpoints, this translation covers 1`);
  const [ep] = endpoints;
  const unknown = Object.keys(ep).filter((k) => !KNOWN_ENDPOINT_FIELDS.has(k));
  if (pm.spec.selector.matchExpressions) unknown.push("selector.matchExpressions");
  if (unknown.length) throw new Error(`PodMonitor ${name}: fields not covered here: ${unknown.join(", ")}`);
  const ns = pm.spec.namespaceSelector ?? {};
  // Pod discovery would list the selected namespaces only; the file lists every pod.
  const namespaces = ns.any ? [] : [{ action: "keep", source_labels: ["__meta_kubernetes_namespace"], regex: (ns.matchNames ?? [namespace]).join("|") }];
  return {
    job_name: `podMonitor/${namespace}/${name}/0`,
    scrape_interval: interval,
    metrics_path: ep.path ?? "/metrics",
    file_sd_configs: [{ files: [sdFile] }],
    relabel_configs: [
      ...namespaces,
      ...Object.entries(pm.spec.selector.matchLabels ?? {}).map(([label, value]) => ({
        action: "keep",
        source_labels: [`__meta_kubernetes_pod_label_${metaName(label)}`],
        regex: value,
      })),
      { action: "drop", source_labels: ["__meta_kubernetes_pod_phase"], regex: "(Failed|Succeeded)" },
      { action: "keep", source_labels: ["__meta_kubernetes_pod_container_port_name"], regex: ep.port },
      { source_labels: ["__meta_kubernetes_namespace"], target_label: "namespace" },
      { source_labels: ["__meta_kubernetes_pod_container_name"], target_label: "container" },
      { source_labels: ["__meta_kubernetes_pod_name"], target_label: "pod" },
      { target_label: "job", replacement: `${namespace}/${name}` },
      { target_label: "endpoint", replacement: ep.port },
      ...(ep.relabelings ?? []).map((r) =>
        dropUndefined({
          action: r.action?.toLowerCase(),
          source_labels: r.sourceLabels,
          separator: r.separator,
          target_label: r.targetLabel,
          regex: r.regex,
          modulus: r.modulus,
          replacement: r.replacement,
        }),
      ),
    ],
  };
}

function dropUndefined(o) {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}
