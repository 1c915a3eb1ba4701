"""The registry: one web application for the whole broadcast network (docs/registry.md).

Streams and nodes register here and send heartbeats; people read HTML pages, nodes and the fleet read JSON. The
registry is never in the media path: engines get a transport file and peer candidates from it and then play
through the swarm, trackers and PEX alone.
"""
