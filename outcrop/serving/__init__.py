"""Serverless serving: per-model routing to model copies, copy lifecycle, autoscaling, cold starts.

The API surfaces call :class:`outcrop.serving.service.Serving`; it reaches copies only over
HTTP (the copy contract of DESIGN.md), starts them with a launcher chosen by name
(:mod:`outcrop.cluster.launchers`) and scales them with the pure decisions of
:mod:`outcrop.serving.autoscaler`. Routing choices are pure too (:mod:`outcrop.serving.routing`).

Nothing is imported here, so ``python -m outcrop.serving.nullcopy`` starts fast.
"""
