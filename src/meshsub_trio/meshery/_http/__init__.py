"""The HTTP routes beside GraphQL: REST, Meshery's SSE routes, the long-poll."""
