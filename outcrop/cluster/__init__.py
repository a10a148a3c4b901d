"""Placing copies on a cluster: the ``ray`` launcher (:mod:`outcrop.cluster.ray_launcher`), the
actor that runs a copy on its node (:mod:`outcrop.cluster.copy_actor`) and how a node gets a
verified model folder (:mod:`outcrop.cluster.node_models`).

Ray places copies and reports lost nodes; Outcrop keeps routing, scaling and the Bedrock
semantics (``outcrop.serving``). Nothing here imports Ray until the ``ray`` launcher is used.
"""
