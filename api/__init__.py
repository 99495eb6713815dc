"""HTTP/WebSocket API, the web page it serves, and the `repolens` CLI."""
