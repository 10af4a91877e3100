"""The GraphiQL playground page, with subscriptions over graphql-transport-ws."""

from __future__ import annotations

import json

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>meshsub-trio playground</title>
  <style>body { margin: 0; height: 100vh; } #graphiql { height: 100vh; }</style>
  <link rel="stylesheet" href="https://esm.sh/graphiql@3/graphiql.min.css">
</head>
<body>
  <div id="graphiql">Loading GraphiQL…</div>
  <script type="module">
    import React from "https://esm.sh/react@18";
    import ReactDOM from "https://esm.sh/react-dom@18/client";
    import { GraphiQL } from "https://esm.sh/graphiql@3?deps=react@18,react-dom@18";
    import { createGraphiQLFetcher } from "https://esm.sh/@graphiql/toolkit@0.9";
    const endpoint = __ENDPOINT__;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const fetcher = createGraphiQLFetcher({
      url: location.origin + endpoint,
      subscriptionUrl: scheme + "//" + location.host + endpoint,
    });
    ReactDOM.createRoot(document.getElementById("graphiql"))
      .render(React.createElement(GraphiQL, { fetcher }));
  </script>
</body>
</html>
"""


def playground_html(endpoint: str) -> bytes:
    """The page, pointed at *endpoint* for both HTTP and WebSocket requests."""
    return _PAGE.replace("__ENDPOINT__", json.dumps(endpoint)).encode()
