"""InfiniteYou for ComfyUI: identity-preserved FLUX generation through an InfuseNet residual branch.

ComfyUI imports this package from ``custom_nodes/`` and calls :func:`comfy_entrypoint` (V3 node API).
"""
WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from comfy_api.latest import ComfyExtension

    from .infusenet.examples import copy_missing_photos
    from .infusenet.runtime import announce
    from .nodes import NODES
    from .nodes.routes import register_routes

    class InfiniteYouExtension(ComfyExtension):
        async def get_node_list(self):
            return list(NODES)

    announce()
    copy_missing_photos()
    register_routes()
    return InfiniteYouExtension()
