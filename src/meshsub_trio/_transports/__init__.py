"""Hosts: the native HTTP/WebSocket host (plain and TLS), the ASGI app, HTTP routes and streams."""
