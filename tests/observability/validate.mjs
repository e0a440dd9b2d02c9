// Validates Argo Rollouts and Envoy Gateway objects against the schemas
// of npm's @kubernetes-models/argo-rollouts and
// @kubernetes-models/envoy-gateway (generated from their Go API types).
// Unknown keys are not reported by these schemas. Reads a JSON list of objects on stdin; prints one line per
// object, "ok <kind>/<name>" or "invalid <kind>/<name>: <reason>", and
// exits 1 if any is invalid.
import { AnalysisTemplate } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1/AnalysisTemplate";
import { ClusterAnalysisTemplate } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1/ClusterAnalysisTemplate";
import { EnvoyProxy } from "@kubernetes-models/envoy-gateway/gateway.envoyproxy.io/v1alpha1/EnvoyProxy";

const kinds = {
  "argoproj.io/v1alpha1": { AnalysisTemplate, ClusterAnalysisTemplate },
  "gateway.envoyproxy.io/v1alpha1": { EnvoyProxy },
};
let input = "";
for await (const chunk of process.stdin) input += chunk;
let failed = false;
for (const obj of JSON.parse(input)) {
  const id = `${obj.kind}/${obj.metadata?.name}`;
  const Model = (kinds[obj.apiVersion] || {})[obj.kind];
  try {
    if (!Model) throw new Error(`no schema for ${obj.apiVersion} ${obj.kind}`);
    new Model(obj).validate();
    console.log(`ok ${id}`);
  } catch (e) {
    failed = true;
    console.log(`invalid ${id}: ${String(e.message).split("\n").join(" ")}`);
  }
}
process.exit(failed ? 1 : 0);
