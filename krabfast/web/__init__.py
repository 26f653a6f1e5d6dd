"""The HTTP side of the gateway port: the protocol, its routes and the pages it serves."""
