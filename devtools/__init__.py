"""Development tools shared by scripts/, bench/ and tests/ (never imported by the node pack at run time):

* ``comfy_env``: find the ComfyUI a script or test runs against, and import it in-process;
* ``host_models``, ``infusenet_files``, ``face_models``: small random models with the real key layouts
  (FLUX, CLIP-L, TAESD; InfuseNet folders/files and projections; antelopev2 and ArcFace stand-ins);
* ``flux_pair``, ``tiny_training``: small ComfyUI/diffusers FLUX pairs and trainer configurations;
* ``server``, ``workflow_api``: a real ComfyUI server in a subprocess, and UI-to-API workflow conversion.
"""
