// Validates Kubernetes custom resources against their CRD schemas, offline.
//
//   node validate-crds.mjs NODE_MODULES < objects.json
//
// NODE_MODULES: where scripts/setup-node-tools.sh installed the packages (.cache/node-tools/
// node_modules; an ES module resolves bare names only next to itself, hence the paths below).
// stdin: a JSON array of {"name": "...", "doc": {...}}; stdout: a JSON array of
// {"name": "...", "kind": "...", "error": null | "..."}, one per input, in order.
// A kind without a schema here is an error, never a pass.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
const load = (path) => import(pathToFileURL(join(modules, path)).href);
const { ScaledObject } = await load("@kubernetes-models/keda/keda.sh/v1alpha1/index.js");
const { PrometheusRule, ServiceMonitor } = await load(
  "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/index.js",
);

const MODELS = {
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
};

const inputs = JSON.parse(readFileSync(0, "utf8"));
const results = inputs.map(({ name, doc }) => {
  const key = `${doc.apiVersion}/${doc.kind}`;
  const Model = MODELS[key];
  if (Model === undefined) {
    return { name, kind: key, error: `no schema for ${key}` };
  }
  try {
    new Model(doc).validate();
    return { name, kind: key, error: null };
  } catch (e) {
    return { name, kind: key, error: String(e && e.message ? e.message : e) };
  }
});
process.stdout.write(JSON.stringify(results));
