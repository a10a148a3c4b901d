"""Serverless serving: requests routed to model copies that start on demand and scale to zero.

Where to look:

==================  ================================================================
``service.py``      :class:`~outcrop.serving.service.Serving`, the facade the API surfaces and
                    batch jobs call; it only wires the parts below together.
``router.py``       where a request picks a copy: resolve the model, take a slot on the
                    least-loaded ready copy or wait in the model's queue, hold through a
                    cold start, send, release, hand the slot on (the request path).
``routing.py``      the router's pure pieces: ``choose_copy``, slot caps, the wait queue.
``autoscaler.py``   where scaling is decided: pure ``decide``, ``cold_start_action``,
                    ``restart_backoff_seconds``, ``fail_waiters_now`` (tables of tests).
``controller.py``   the loop that reads load, calls those decisions and acts: starts and
                    stops copies, restart backoff, making room in memory (``memory.py``'s
                    pure ``plan_fit``), warm-up.
``fleet.py``        where a copy is started: launch (through a launcher of
                    :mod:`outcrop.cluster.launchers`), health checks, stop. Nothing else.
``gateways.py``     several gateways sharing one fleet: leases, demand board, adoption of
                    copies found running, and which gateway owns each copy.
``copies.py``       the copy status enum and the record of one copy.
``copyclient.py``   HTTP to a copy (the copy contract, docs/architecture.md); ``protocol.py`` its messages.
==================  ================================================================

Nothing is imported here, so a process that needs one submodule starts fast. The null copy
that tests and benchmarks start in place of a model is ``outcrop/testing/nullcopy.py``.
"""
