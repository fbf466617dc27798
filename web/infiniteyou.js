// InfiniteYou Studio frontend extension: shows what the InfiniteYou nodes report (InfuseNet variant
// and precision, identity similarity) as text on the node after it runs.
import { app } from "../../scripts/app.js";

const PREFIX = "InfU_";

app.registerExtension({
  name: "infiniteyou-studio.node-reports",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name.startsWith(PREFIX)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const lines = message?.text;
      if (!lines || !lines.length) return;
      const text = lines.join("\n");
      let widget = this.widgets?.find((w) => w.name === "infu_report");
      if (!widget) {
        widget = this.addWidget("text", "infu_report", "", () => {}, { serialize: false });
        widget.disabled = true;
      }
      widget.value = text;
      this.setDirtySize?.();
    };
  },
});
