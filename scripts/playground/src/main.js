// The playground page's script: GraphiQL with subscriptions over graphql-ws.
//
// The server writes a small JSON config into the page (the endpoint paths and
// the hashed worker file names); the URLs are derived from the page's own
// location, so the playground works behind any host, port and scheme
// (http -> ws, https -> wss). Headers typed into GraphiQL's header editor go
// with every HTTP request and, for subscriptions, as the WebSocket's
// connectionParams (graphql-ws), which is where a server reads a token.
import { createGraphiQLFetcher } from "@graphiql/toolkit";
import { GraphiQL } from "graphiql";
import { createElement } from "react";
import { createRoot } from "react-dom/client";
import "graphiql/style.css";

const config = JSON.parse(document.getElementById("meshsub-playground").textContent);

// Monaco's editors run their language services in web workers, bundled as
// separate files by scripts/build-playground (never fetched from a CDN).
globalThis.MonacoEnvironment = {
  getWorker(_workerId, label) {
    const url = config.workers[label] ?? config.workers.editor;
    return new Worker(url);
  },
};

export function endpoints(location, httpPath, wsPath) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return {
    url: new URL(httpPath, location.href).href,
    subscriptionUrl: `${scheme}//${location.host}${wsPath}`,
  };
}

const { url, subscriptionUrl } = endpoints(window.location, config.httpPath, config.wsPath);
const fetcher = createGraphiQLFetcher({
  url,
  subscriptionUrl,
  // The server answers plain JSON; no multipart (@defer/@stream) negotiation.
  enableIncrementalDelivery: false,
});

const root = createRoot(document.getElementById("graphiql"));
root.render(
  createElement(GraphiQL, {
    fetcher,
    defaultQuery: config.defaultQuery,
    defaultHeaders: config.defaultHeaders,
    // Tokens typed into the header editor stay in this tab, not in localStorage.
    shouldPersistHeaders: false,
  }),
);
