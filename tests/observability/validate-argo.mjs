// Validates Argo Rollouts objects against the schemas of npm's
// @kubernetes-models/argo-rollouts (generated from Argo Rollouts' Go API
// types). Reads a JSON list of objects on stdin; prints one line per
// object, "ok <kind>/<name>" or "invalid <kind>/<name>: <reason>", and
// exits 1 if any is invalid.
import { AnalysisTemplate } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1/AnalysisTemplate";
import { ClusterAnalysisTemplate } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1/ClusterAnalysisTemplate";

const kinds = { AnalysisTemplate, ClusterAnalysisTemplate };
let input = "";
for await (const chunk of process.stdin) input += chunk;
let failed = false;
for (const obj of JSON.parse(input)) {
  const id = `${obj.kind}/${obj.metadata?.name}`;
  const Model = kinds[obj.kind];
  try {
    if (!Model) throw new Error(`unknown kind ${obj.kind}`);
    if (obj.apiVersion !== "argoproj.io/v1alpha1") throw new Error(`apiVersion ${obj.apiVersion}`);
    new Model(obj).validate();
    console.log(`ok ${id}`);
  } catch (e) {
    failed = true;
    console.log(`invalid ${id}: ${String(e.message).split("\n").join(" ")}`);
  }
}
process.exit(failed ? 1 : 0);
