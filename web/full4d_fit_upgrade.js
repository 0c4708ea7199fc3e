// Opens UI workflows saved before Full4DFit4DGS's finer settings moved to Full4DFitOptions and its FMD inputs to
// Full4DFMDTeacher. The frontend restores a node's widget values by position and its input slots as saved, so such
// a Fit node would get lr_means as its Gaussian budget and keep sockets it no longer has. This puts a new Fit node
// in its place (same id, position, size, title and links), sets its widgets by name from the old values, and
// connects a Full4DFitOptions node where the old settings were not the defaults and a Full4DFMDTeacher node where
// FMD was on (weight = lambda_fmd, its model / VAE / prompt / source from the old fmd_* links; the teacher encodes
// the source itself, so fmd_source_latent's link is dropped). API prompts need none of this: the server reads the
// old inputs (comfyui_full4d/host/fitting.py).
import { app } from "../../scripts/app.js";

const FIT = "Full4DFit4DGS";
// the old node's widgets in the order its widgets_values hold them (required inputs, then optional ones)
const OLD_WIDGETS = ["iterations", "lr_means", "lr_planes", "lambda_dssim", "lambda_tv", "max_gaussians",
  "prune_opacity", "sh_degree", "checkpoint_every", "resume", "render_time", "orbit_frames", "init", "lambda_fmd",
  "recalibrate"];
const OLD_SOCKETS = ["fmd_model", "fmd_vae", "fmd_positive", "fmd_source", "fmd_source_latent"];
// Full4DFitOptions' widgets and their defaults (comfyui_full4d/gaussians/pipeline.py FitOptions)
const OPTIONS = { lr_means: 1.6e-4, lr_planes: 0.05, lambda_dssim: 0.2, lambda_tv: 2e-4, prune_opacity: 0.015,
  sh_degree: 3, checkpoint_every: 500, recalibrate: true };
const TEACHER = { fmd_model: "model", fmd_vae: "vae", fmd_positive: "positive", fmd_source: "source" };

function isOld(info) {
  return (info?.inputs ?? []).some((i) => OLD_SOCKETS.includes(i.name))
    && (info.widgets_values?.length ?? 0) >= OLD_WIDGETS.length;
}

function setWidgets(node, values) {
  for (const w of node.widgets ?? []) if (w.name in values) w.value = values[w.name];
}

function upgrade(graph, old) {
  const saved = old.full4dSaved;
  delete old.full4dSaved;
  const values = Object.fromEntries(OLD_WIDGETS.map((name, i) => [name, saved.widgets[i]]));
  const origin = (name) => {  // [node, slot] feeding the old input `name`, or null
    const link = graph.links.get?.(saved.links[name]) ?? graph.links[saved.links[name]];
    const node = link && graph.getNodeById(link.origin_id);
    return node ? [node, link.origin_slot] : null;
  };
  const targets = (old.outputs ?? []).map((o) => (o.links ?? []).map((id) => graph.links.get?.(id) ?? graph.links[id])
    .filter(Boolean).map((l) => [graph.getNodeById(l.target_id), l.target_slot]));
  const sources = Object.fromEntries(Object.keys(saved.links).map((name) => [name, origin(name)]));
  const { id, pos, size, title } = old;
  graph.remove(old);
  const fit = window.LiteGraph.createNode(FIT);
  fit.id = id;
  fit.pos = [...pos];
  graph.add(fit);
  fit.title = title;
  fit.setSize([Math.max(size[0], fit.size[0]), fit.size[1]]);
  setWidgets(fit, values);
  for (const [name, src] of Object.entries(sources)) {
    if (src && !OLD_SOCKETS.includes(name) && fit.findInputSlot(name) >= 0) src[0].connect(src[1], fit, name);
  }
  targets.forEach((links, slot) => links.forEach(([node, target]) => node && fit.connect(slot, node, target)));
  let below = pos[1] + fit.size[1] + 80;
  const changed = Object.keys(OPTIONS).filter((k) => values[k] !== undefined && values[k] !== OPTIONS[k]);
  if (changed.length) {
    const options = window.LiteGraph.createNode("Full4DFitOptions");
    options.pos = [pos[0], below];
    graph.add(options);
    setWidgets(options, Object.fromEntries(Object.keys(OPTIONS).map((k) => [k, values[k] ?? OPTIONS[k]])));
    options.connect(0, fit, "options");
    below += options.size[1] + 80;
  }
  if (Number(values.lambda_fmd) > 0) {
    const teacher = window.LiteGraph.createNode("Full4DFMDTeacher");
    teacher.pos = [pos[0], below];
    graph.add(teacher);
    setWidgets(teacher, { weight: Number(values.lambda_fmd) });
    for (const [name, input] of Object.entries(TEACHER)) {
      const src = sources[name];
      if (src) src[0].connect(src[1], teacher, input);
    }
    teacher.connect(0, fit, "fmd_teacher");
  }
  console.info(`[full4d] node ${id}: ${FIT} saved with its old inputs, upgraded`
    + (changed.length ? ` (Full4DFitOptions for ${changed.join(", ")})` : "")
    + (Number(values.lambda_fmd) > 0 ? " (Full4DFMDTeacher)" : ""));
}

app.registerExtension({
  name: "full4d.fitUpgrade",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== FIT) return;
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function (info) {
      const r = onConfigure?.apply(this, arguments);
      if (isOld(info)) {
        this.full4dSaved = { widgets: [...info.widgets_values],
          links: Object.fromEntries(info.inputs.filter((i) => i.link != null).map((i) => [i.name, i.link])) };
      }
      return r;
    };
  },
  async afterConfigureGraph() {
    const graph = app.graph;
    for (const node of [...graph.nodes]) if (node.full4dSaved) upgrade(graph, node);
    graph.setDirtyCanvas(true, true);
  },
});
