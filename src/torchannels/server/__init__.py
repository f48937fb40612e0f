"""The standalone server (``torchannels serve``): an application built on the
library, never imported by it.

It adds what a deployment needs around the core: configuration
(:mod:`.config`), the HTTP publish API (:mod:`.api`), token-based access and
the routes (:mod:`.app`), the demo page (:mod:`.demo`), Prometheus metrics
(:mod:`.metrics`) and the command line (:mod:`.cli`).
"""
