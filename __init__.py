"""InfiniteYou for ComfyUI: identity-preserved FLUX generation through an InfuseNet residual branch.

ComfyUI imports this package from ``custom_nodes/`` and calls :func:`comfy_entrypoint` (V3 node API).
"""
from comfy_api.latest import ComfyExtension, io

WEB_DIRECTORY = "./web"


class InfiniteYouExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        from .nodes import NODES

        return list(NODES)


async def comfy_entrypoint() -> InfiniteYouExtension:
    from .infusenet.runtime import announce

    announce()
    return InfiniteYouExtension()
